#!/usr/bin/env python
"""Pictures of what the models did: mask overlays, crop chains, decoded visual thoughts.

    # masks: ground truth vs the decoded mask tokens (eval_gres.py's results hold both ids
    # and predicted masks, so no codec is needed here)
    python data_tools/visualize.py masks --results eval/results.json \
        --gt data/gres/gres_val.jsonl --image-root coco/train2014 --out vis/masks [--max 12]

    # crop chains: the boxes drawn on the picture, then the crops in the order the model
    # read them, and its text (crop_infer.py's --output_json)
    python data_tools/visualize.py crops --results crop_infer/results.json \
        --batch_file heldout.jsonl --out vis/crops

    # visual thoughts: covt_decode.py's per-expert pictures on one sheet
    python data_tools/visualize.py thoughts --decoded covt_decode/decoded.json \
        --out vis/thoughts.png

Each command writes one PNG per sample and a ``sheet.png`` (or the single ``--out`` PNG for
``thoughts``) that puts them side by side; files are written atomically. Samples whose
picture cannot be read are counted and reported at the end, never silently dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from svp.common.io import atomic_path


def _save(img, path: Path) -> Path:
    with atomic_path(path) as tmp:
        img.save(tmp)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: {path}: cannot read {what}: {exc}") from exc


def masks(args) -> int:
    """Ground truth (green) vs prediction (red), overlap yellow; one PNG per sample."""
    from PIL import Image
    from tqdm import tqdm

    from data_tools.eval_gres import load_ground_truth
    from svp.common.overlay import mask_overlay
    from svp.masktok.coco import rle_to_mask

    res = _read_json(args.results, "eval_gres.py results")
    samples = res.get("samples") if isinstance(res, dict) else None
    if not samples or "pred_rle" not in samples[0]:
        raise SystemExit(f"error: {args.results}: no per-sample 'pred_rle' (write it with "
                         "data_tools/eval_gres.py --out)")
    # overlays at the image size whatever protocol scored them (pred_rle is at that size)
    gts = {g["id"]: g for g in load_ground_truth(argparse.Namespace(gt=str(args.gt),
                                                                    protocol="samtok"))}
    tiles, captions, skipped = [], [], []
    images: dict[str, Image.Image | OSError] = {}  # GRES asks several questions per picture
    for s in tqdm(samples[:args.max], desc="masks", unit="sample"):
        gt = gts.get(s["id"])
        if gt is None:
            skipped.append(f"{s['id']}: not in {args.gt}")
            continue
        if gt["image"] not in images:
            try:
                images[gt["image"]] = Image.open(Path(args.image_root) / gt["image"]).convert("RGB")
            except OSError as exc:
                images[gt["image"]] = exc
        image = images[gt["image"]]
        if isinstance(image, OSError):
            skipped.append(f"{s['id']}: {image}")
            continue
        pred = rle_to_mask(s["pred_rle"])
        tile = mask_overlay(image, gt["target"](), pred)
        _save(tile, args.out / f"{_safe(s['id'])}.png")
        tiles.append(tile)
        what = "no target" if gt["no_target"] else f"IoU {s['iou']:.2f}"
        captions.append(f"{s['id']}  {what}  ({s['n_pred_masks']} mask(s) predicted)")
    return _finish(args.out, tiles, captions, skipped, cols=2)


def crops(args) -> int:
    """The picture with the requested boxes, then each crop the model was given."""
    from PIL import Image
    from tqdm import tqdm

    from svp.common.overlay import crop_chain

    results = _read_json(args.results, "crop_infer.py results")
    results = results if isinstance(results, list) else [results]
    rows = [json.loads(x) for x in args.batch_file.read_text().splitlines() if x.strip()]
    if len(rows) != len(results):
        raise SystemExit(f"error: {args.batch_file} has {len(rows)} rows but {args.results} "
                         f"{len(results)} results; give the batch file the results came from")
    tiles, captions, skipped = [], [], []
    for i, (row, r) in enumerate(tqdm(list(zip(rows, results, strict=True))[:args.max],
                                      desc="crops", unit="sample")):
        try:
            image = Image.open(row["image"]).convert("RGB")
            pieces = [Image.open(p).convert("RGB") for p in r["crops"]]
        except OSError as exc:
            skipped.append(f"sample {i}: {exc}")
            continue
        boxes = [c["box_pixels"] for c in r["tool_calls"]]
        notes = [f"invalid call {c['text']!r}: {c['reason']}" for c in r["invalid_calls"]]
        if not r.get("finished", True):
            notes.append("stopped at max_new_tokens")
        truth = f"  (truth: {row['answer']})" if "answer" in row else ""
        tile = crop_chain(image, boxes, pieces, f"Q: {row['question']}{truth}\nA: {r['text']}",
                          notes, truth=[row["bbox"]] if row.get("bbox") else None)
        _save(tile, args.out / f"sample{i}.png")
        tiles.append(tile)
        captions.append(f"sample {i}: {len(boxes)} crop(s), answer {r['answer']!r}")
    return _finish(args.out, tiles, captions, skipped, cols=1)


def thoughts(args) -> int:
    """covt_decode.py's pictures (image | decoded from the tokens | the expert) stacked."""
    from PIL import Image

    from svp.common.overlay import contact_sheet

    decoded = _read_json(args.decoded, "covt_decode.py output")
    experts = decoded.get("experts") or {}
    if not experts:
        raise SystemExit(f"error: {args.decoded}: no decoded expert (the answer held no "
                         f"complete token group: missing {decoded.get('missing')})")
    tiles, captions = [], []
    for name, e in experts.items():
        tiles.append(Image.open(e["png"]))
        captions.append(f"{name}: loss vs expert {e['loss']:.3g}, with zero tokens "
                        f"{e['zero_token_loss']:.3g}   (image | decoded from tokens | expert)")
    _save(contact_sheet(tiles, captions, cols=1), args.out)
    print(f"wrote {args.out} ({len(tiles)} expert(s))")
    return 0


def _finish(out: Path, tiles, captions, skipped: list[str], cols: int) -> int:
    from svp.common.overlay import contact_sheet

    if tiles:
        _save(contact_sheet(tiles, captions, cols=cols), out / "sheet.png")
    print(f"wrote {len(tiles)} picture(s) and {out / 'sheet.png'}"
          + (f"; skipped {len(skipped)}" if skipped else ""))
    for s in skipped[:10]:
        print(f"  skipped {s}", file=sys.stderr)
    return 0 if tiles else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("masks", help="GRES masks: ground truth vs decoded")
    m.add_argument("--results", required=True, type=Path, help="eval_gres.py --out JSON")
    m.add_argument("--gt", required=True, type=Path, help="tokenize_gres.py JSONL")
    m.add_argument("--image-root", required=True)
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("--max", type=int, default=12)
    c = sub.add_parser("crops", help="crop chains from crop_infer.py")
    c.add_argument("--results", required=True, type=Path, help="crop_infer.py --output_json")
    c.add_argument("--batch_file", required=True, type=Path,
                   help="the --batch_file those results came from (image, question; "
                        "optional answer, bbox = the true box in pixels)")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--max", type=int, default=8)
    t = sub.add_parser("thoughts", help="decoded visual-thought maps from covt_decode.py")
    t.add_argument("--decoded", required=True, type=Path, help="covt_decode.py's decoded.json")
    t.add_argument("--out", required=True, type=Path, help="PNG to write")
    args = ap.parse_args(argv)
    return {"masks": masks, "crops": crops, "thoughts": thoughts}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
