#!/usr/bin/env python
"""DAM-style region captions to mask-understanding conversations (mask tokens in the question).

    python data_tools/tokenize_dam.py --annotations dam.jsonl --image-root images \
        --codec builtin:runs/codec/codec.pt --out data/dam --name dam_train

Input rows (JSON list or JSONL), either one region per row
``{"image": "a.jpg", "mask": RLE-or-polygons, "caption": "..."}`` (``mask_rle`` and
``segmentation`` are accepted names for the mask), or several
``{"image": "a.jpg", "regions": [{"mask": ..., "caption": ...}, ...]}``. Masks are COCO RLE
(compressed or list counts) or polygon lists, at the image's size.

Rows are built as SAMTok's ``tokenize_dam.py`` builds them (svp/masktok/dam_data.py): a
region whose *box* covers more than 0.2 of the image is asked about on the full image; a
smaller one also gets a zoomed-in crop (box widened to >= 140 px a side, cut at the image
edge, small crops upscaled to a 280 px short side), written to OUT/crops/, and its mask is
encoded again inside that crop: the question carries both token strings, the crop as an
inline second ``<image>`` (SAMTok's templates). Output: OUT/NAME.jsonl (LLaVA rows, sharded,
atomic, resumable: reused only by a rerun with the same input, arguments and codec weights),
OUT/datasets.yaml and OUT/NAME.summary.json; one run at a time writes into OUT.
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

from data_tools.tokenize_gres import load_image
from svp.common.io import (
    BadLine,
    OutputLocked,
    atomic_path,
    file_sha256,
    iter_jsonl,
    output_lock,
    read_json_document,
    write_atomic,
)
from svp.common.settings import SettingsError, qwen_budgets
from svp.common.sharded import (
    run_sharded,
    summary_line,
    write_registry_entry,
)
from svp.masktok import dam_data
from svp.masktok.coco import SegmentationError, annotation_to_mask
from svp.masktok.codec import codec_fingerprint, load_codec
from svp.masktok.tokens import codes_to_text


class InputError(ValueError):
    """The annotation file as a whole cannot be read (named file, line or reason)."""


def read_regions(path: Path) -> tuple[list[dict], list[str]]:
    """Flatten the input into one dict per region: image, mask, caption, where. Returns the
    regions and the JSONL lines that could not be used (``line N: reason``: not UTF-8, not
    JSON, not an object), which are skipped and counted; a JSON list file that does not
    parse raises :class:`InputError` naming the line."""
    bad: list[str] = []
    if path.suffix == ".jsonl":
        rows = []
        for lineno, row in iter_jsonl(path):
            if isinstance(row, BadLine):
                bad.append(f"line {lineno}: {row}")
            else:
                rows.append((f"line {lineno}", row))
    else:
        try:
            doc = read_json_document(path)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if not isinstance(doc, list):
            raise InputError(f"expected a JSON list of rows, got {type(doc).__name__}")
        rows = [(f"row {i}", r) for i, r in enumerate(doc, 1)]
    regions = []
    for where, row in rows:
        if not isinstance(row, dict):
            bad.append(f"{where}: expected an object, got {type(row).__name__}")
            continue
        subs = row.get("regions")
        if subs is None:
            subs = [row]
        if not isinstance(subs, list) or not all(isinstance(r, dict) for r in subs):
            bad.append(f"{where}: 'regions' must be a list of objects")
            continue
        for j, reg in enumerate(subs, 1):
            mask = next((reg[k] for k in ("mask", "mask_rle", "segmentation") if k in reg), None)
            regions.append({"image": row.get("image"), "mask": mask,
                            "caption": reg.get("caption"),
                            "where": where if len(subs) == 1 else f"{where}.{j}"})
    return regions, bad


def _region_mask(reg: dict, width: int, height: int):
    """(mask, None) or (None, skip reason). The mask is checked before it is rasterised
    (svp/masktok/coco.py): a NaN, infinite or far-away coordinate or an RLE that does not
    cover the picture is a named skip, never a hang or a crash in pycocotools."""
    if not isinstance(reg["caption"], str) or not reg["caption"].strip():
        return None, "no caption"
    try:
        mask = annotation_to_mask(reg["mask"], height, width)
    except SegmentationError as exc:
        print(f"skipped: {reg['where']}: {exc}", file=sys.stderr)
        return None, f"bad mask ({exc.kind})"
    if not mask.any():
        return None, "empty mask"
    return mask, None


def process_shard(regions: list[dict], k: int, codec, image_root: Path, out: Path, name: str,
                  seed: int, budgets=()) -> tuple[list[dict], Counter]:
    """Rows for one shard. Consecutive regions of one picture (a ``regions`` row) share one
    image decode and one codec call for the full-image codes; each zoomed region's crop is
    encoded on its own (it is another image)."""
    from PIL import Image

    rng = random.Random(seed + k)
    counts: Counter = Counter()
    rows = []
    indexed = list(enumerate(regions))
    for image_name, group in itertools.groupby(indexed, key=lambda x: x[1]["image"]):
        group = list(group)
        img, reason = (load_image(image_root, image_name, budgets) if image_name
                       else (None, "no image"))
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
            box = dam_data.mask_box(mask)
            row = {"id": f"{name}:{k}:{i}", "source": reg["where"],
                   "box_share": round(dam_data.box_share(box, w, h), 5)}
            if not dam_data.takes_zoom(box, w, h):
                q = rng.choice(dam_data.GLOBAL_QUESTIONS).format(SEG=tokens)
                images = [image_name]
                counts["global"] += 1
            else:
                window = dam_data.zoom_window(box, w, h)
                crop = img.crop(window)
                size = dam_data.zoom_size(*crop.size)
                if size is not None:
                    crop = crop.resize(size, Image.LANCZOS)
                inner = dam_data.crop_mask(mask, window, size)
                if not inner.any():
                    counts["skipped: empty mask in the crop"] += 1
                    continue
                crop_codes = codec.encode(crop, inner[None])[0]
                crop_tokens = codes_to_text(int(crop_codes[0]), int(crop_codes[1]))
                crop_path = out / "crops" / f"{name}-{k:05d}-{i:05d}.png"
                with atomic_path(crop_path) as tmp:
                    crop.save(tmp)
                q = rng.choice(dam_data.ZOOM_QUESTIONS).format(SEG=tokens,
                                                               ZOOM_IN_SEG=crop_tokens)
                images = [image_name, str(crop_path.resolve())]
                row.update(zoom_window=list(window), crop_size=list(crop.size))
                counts["zoomed"] += 1
            rows.append({**row, "image": images if len(images) > 1 else images[0],
                         "conversations": [{"from": "human", "value": "<image>\n" + q},
                                           {"from": "gpt", "value": reg["caption"].strip()}]})
            counts["written"] += 1
    return rows, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotations", required=True)
    ap.add_argument("--image-root", required=True)
    ap.add_argument("--codec", required=True, help="builtin:PATH or samtok:DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="dam")
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
        regions, bad_lines = read_regions(path)
    except InputError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    for line in bad_lines:
        print(f"skipped: {path}: {line}", file=sys.stderr)
    if args.limit is not None:
        regions = regions[: args.limit]
    out = Path(args.out)
    try:
        with output_lock(out):
            return _write(args, path, regions, bad_lines, out)
    except (OutputLocked, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _write(args, path: Path, regions: list[dict], bad_lines: list[str], out: Path) -> int:
    """Tokenize into ``out`` (locked by the caller); shards and crops are keyed by the input
    file, the arguments and the codec's weights, so a changed rerun starts afresh."""
    fingerprint = codec_fingerprint(args.codec)
    budgets = qwen_budgets()  # images training would refuse at this MAX_PIXELS are skipped
    key = {"tool": "tokenize_dam", "format": 2, "annotations": file_sha256(path),
           "image_root": os.path.abspath(args.image_root), "limit": args.limit,
           "seed": args.seed, "codec": fingerprint, "device": args.device,
           "budgets": budgets}
    codec = load_codec(args.codec, device=args.device)
    joined, totals = run_sharded(
        regions, args.shard_size, out, args.name,
        lambda shard, k: process_shard(shard, k, codec, Path(args.image_root), out, args.name,
                                       args.seed, budgets),
        desc=f"tokenize {args.name}", key=key)
    totals["written"] += 0  # in the summary even when nothing was written
    if bad_lines:
        totals["skipped: unreadable row"] += len(bad_lines)
    write_registry_entry(out, args.name, joined, os.path.abspath(args.image_root))
    write_atomic(out / f"{args.name}.summary.json", json.dumps(
        {"name": args.name, "regions": len(regions), "codec": args.codec,
         "codec_fingerprint": fingerprint, **dict(sorted(totals.items()))}, indent=2))
    print(summary_line(args.name, totals, joined)
          + f"; {totals['global']} global, {totals['zoomed']} with a zoomed-in crop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
