#!/usr/bin/env python
"""DAM-style region captions to mask-understanding conversations (mask tokens in the question).

    python data_tools/tokenize_dam.py --annotations dam.jsonl --image-root images \
        --codec builtin:runs/codec/codec.pt --out data/dam --name dam_train

Input rows (JSON list or JSONL), either one region per row
``{"image": "a.jpg", "mask": RLE-or-polygons, "caption": "..."}`` (``mask_rle`` and
``segmentation`` are accepted names for the mask), or several
``{"image": "a.jpg", "regions": [{"mask": ..., "caption": ...}, ...]}``. Masks are COCO RLE
(compressed or list counts) or polygon lists, at the image's size.

A region covering at least --zoom-threshold of the image (default 0.2) is asked about
directly; a smaller one also gets a zoomed-in crop (its box grown by --context on each side,
clamped to the image) as a second image, written to OUT/crops/. The mask tokens always
describe the region in the full image. Output: OUT/NAME.jsonl (LLaVA rows, sharded, atomic,
resumable), OUT/datasets.yaml and OUT/NAME.summary.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from svp.common.io import atomic_path, write_atomic
from svp.common.sharded import (
    run_sharded,
    summary_line,
    write_registry_entry,
)
from svp.masktok.coco import annotation_to_mask
from svp.masktok.codec import load_codec, masks_to_boxes
from svp.masktok.tokens import codes_to_text

DIRECT_QUESTIONS = (
    "Please describe the region {mask} in detail.",
    "What is in the region {mask}? Describe it in detail.",
    "Give a detailed description of {mask}.",
)
ZOOM_QUESTIONS = (
    "The second image is a zoomed-in view of the region. Please describe the region {mask} "
    "in detail.",
    "Here is a close-up of the region as well. What is in the region {mask}? Describe it.",
)


def read_regions(path: Path) -> list[dict]:
    """Flatten the input into one dict per region: image, mask, caption, where."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [(f"line {i}", json.loads(x)) for i, x in enumerate(text.splitlines(), 1)
                if x.strip()]
    else:
        rows = [(f"row {i}", r) for i, r in enumerate(json.loads(text), 1)]
    regions = []
    for where, row in rows:
        subs = row.get("regions")
        if subs is None:
            subs = [row]
        for j, reg in enumerate(subs, 1):
            mask = next((reg[k] for k in ("mask", "mask_rle", "segmentation") if k in reg), None)
            regions.append({"image": row.get("image"), "mask": mask,
                            "caption": reg.get("caption"),
                            "where": where if len(subs) == 1 else f"{where}.{j}"})
    return regions


def zoom_box(box: np.ndarray, width: int, height: int, context: float,
             min_side: int = 16) -> tuple[int, int, int, int]:
    """The region's box grown by ``context`` x its size on each side, at least ``min_side``
    pixels a side, shifted (not cut) to stay inside the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cw = min(width, max(min_side, (x1 - x0) * (1 + 2 * context)))
    ch = min(height, max(min_side, (y1 - y0) * (1 + 2 * context)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(0.0, cx - cw / 2), width - cw)
    top = min(max(0.0, cy - ch / 2), height - ch)
    return (int(round(left)), int(round(top)), int(round(left + cw)), int(round(top + ch)))


def _open(image_root: Path, name: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_root / name) as im:
            return im.convert("RGB"), None
    except FileNotFoundError:
        return None, "image file missing"
    except (UnidentifiedImageError, OSError):
        return None, "image unreadable"


def _region_mask(reg: dict, width: int, height: int):
    """(mask, None) or (None, skip reason)."""
    if not isinstance(reg["caption"], str) or not reg["caption"].strip():
        return None, "no caption"
    try:
        mask = annotation_to_mask(reg["mask"], height, width)
    except (ValueError, TypeError, KeyError):
        return None, "mask not RLE or polygons"
    if mask.shape != (height, width):
        return None, "mask size differs from image"
    if not mask.any():
        return None, "empty mask"
    return mask, None


def process_shard(regions: list[dict], k: int, codec, image_root: Path, out: Path, name: str,
                  threshold: float, context: float, seed: int) -> tuple[list[dict], Counter]:
    """Rows for one shard. Consecutive regions of one picture (a ``regions`` row) share one
    image decode and one codec call."""
    rng = random.Random(seed + k)
    counts: Counter = Counter()
    rows = []
    indexed = list(enumerate(regions))
    for image_name, group in itertools.groupby(indexed, key=lambda x: x[1]["image"]):
        group = list(group)
        img, reason = _open(image_root, image_name) if image_name else (None, "no image")
        if img is None:
            counts[f"skipped: {reason}"] += len(group)
            continue
        w, h = img.size
        valid = []
        for i, reg in group:
            mask, why = _region_mask(reg, w, h)
            if mask is None:
                counts[f"skipped: {why}"] += 1
            else:
                valid.append((i, reg, mask))
        if not valid:
            continue
        all_codes = codec.encode(img, np.stack([v[2] for v in valid]))
        for (i, reg, mask), codes in zip(valid, all_codes, strict=True):
            tokens = codes_to_text(int(codes[0]), int(codes[1]))
            area = float(mask.mean())
            images = [image_name]
            if area >= threshold:
                q = "<image>\n" + rng.choice(DIRECT_QUESTIONS).format(mask=tokens)
                counts["direct"] += 1
            else:
                box = zoom_box(masks_to_boxes(mask[None])[0], w, h, context)
                crop_path = out / "crops" / f"{name}-{k:05d}-{i:05d}.png"
                with atomic_path(crop_path) as tmp:
                    img.crop(box).save(tmp)
                images.append(str(crop_path.resolve()))
                q = "<image>\n<image>\n" + rng.choice(ZOOM_QUESTIONS).format(mask=tokens)
                counts["zoomed"] += 1
            rows.append({"id": f"{name}:{k}:{i}",
                         "image": images if len(images) > 1 else images[0],
                         "conversations": [{"from": "human", "value": q},
                                           {"from": "gpt", "value": reg["caption"].strip()}],
                         "source": reg["where"], "area": round(area, 5)})
            counts["written"] += 1
    return rows, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotations", required=True)
    ap.add_argument("--image-root", required=True)
    ap.add_argument("--codec", required=True, help="builtin:PATH or samtok:DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="dam")
    ap.add_argument("--zoom-threshold", type=float, default=0.2,
                    help="regions below this share of the image get a zoomed-in crop")
    ap.add_argument("--context", type=float, default=0.5,
                    help="crop = box grown by this fraction of its size on each side")
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    path = Path(args.annotations)
    if not path.is_file():
        print(f"error: file not found: {path}", file=sys.stderr)
        return 2
    try:
        regions = read_regions(path)
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        print(f"error: {path}: not a list of DAM rows ({exc})", file=sys.stderr)
        return 2
    if args.limit is not None:
        regions = regions[: args.limit]
    out = Path(args.out)
    codec = load_codec(args.codec, device=args.device)
    joined, totals = run_sharded(
        regions, args.shard_size, out, args.name,
        lambda shard, k: process_shard(shard, k, codec, Path(args.image_root), out, args.name,
                                       args.zoom_threshold, args.context, args.seed),
        desc=f"tokenize {args.name}")
    write_registry_entry(out, args.name, joined, os.path.abspath(args.image_root))
    write_atomic(out / f"{args.name}.summary.json", json.dumps(
        {"name": args.name, "regions": len(regions), "codec": args.codec,
         **dict(sorted(totals.items()))}, indent=2))
    print(summary_line(args.name, totals, joined)
          + f"; {totals['direct']} direct, {totals['zoomed']} with a zoomed-in crop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
