#!/usr/bin/env python
"""Score mask-token predictions on GRES: gIoU, cIoU, N-acc, T-acc, Pr@0.7/0.8/0.9.

    python data_tools/eval_gres.py --pred infer.jsonl --gt data/gres/gres_val.jsonl \
        --image-root coco/train2014 --codec builtin:runs/codec/codec.pt --out results.json \
        [--overlays overlays/ --max-overlays 50]

Predictions: ms-swift's ``swift infer`` result JSONL, or any JSONL whose rows hold the
generated text (``--text-field``, default ``response``). They are matched to the ground
truth by ``id`` when both have one, else by (image file name, question text), else by row
order. Ground truth: the JSONL written by tokenize_gres.py (``target_rle``, ``no_target``),
or the gRefCOCO files (``--grefs``, ``--instances``, ``--split``) with ids
``gres:SPLIT:REF:SENT``. Generated masks are decoded with the codec at the image's size and
their union is scored as the official evaluator does (svp/masktok/gres_metrics.py), under a
named protocol (``--protocol``):

- ``samtok`` (default), SAMTok's GRES evaluation: original resolution, crowd annotations kept,
  the answer's codes read as its script reads them (an odd count repaired, an even count
  paired in order: ``svp.masktok.tokens.parse_mask_tokens_samtok``), a prediction is "no
  target" when its decoded union mask is empty; its fixed prompt
  (``tokenize_gres.py`` writes it for val/test) and unconstrained generation
  (``SVP_CONSTRAIN_MASKS=0 swift infer``) are the caller's side and are checked/recorded.
- ``tokens``: ours: "no target" when the answer holds no mask tokens.
- ``rela``, ReLA's ``refer_evaluation``: masks scored at 480x480 (ground-truth polygons
  rasterised there, predictions resized nearest), crowd annotations dropped; needs
  ``--grefs``/``--instances``. Writes per-sample results
(with the predicted mask as RLE, for data_tools/visualize.py) and the metrics to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from svp.common.io import write_atomic
from svp.masktok.coco import mask_to_rle, rle_to_mask
from svp.masktok.gres_data import (
    EVAL_PROMPT,
    RELA_SIZE,
    GresError,
    load_gres,
    rela_target,
    resize_mask,
    target_masks,
)
from svp.masktok.gres_metrics import format_metrics, gres_metrics, score_sample
from svp.masktok.tokens import MaskAnswerItem, parse_gres_answer, parse_mask_tokens_samtok


def _question(row: dict) -> str:
    for turn in row.get("conversations") or row.get("messages") or []:
        role = turn.get("from", turn.get("role"))
        if role in ("human", "user"):
            text = turn.get("value", turn.get("content", ""))
            return text.replace("<image>", "").strip() if isinstance(text, str) else ""
    return ""


def _image_name(row: dict) -> str:
    img = row.get("image") or row.get("images") or ""
    if isinstance(img, list):
        img = img[0] if img else ""
    if isinstance(img, dict):
        img = img.get("path") or ""
    return os.path.basename(str(img))


def _load_samples(args):
    """The gRefCOCO samples; an unusable ground-truth segmentation stops the evaluation
    (dropping its sentences would change the score without a word)."""
    problems: list[str] = []
    try:
        samples, _ = load_gres(args.grefs, args.instances, args.split, problems)
    except GresError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if problems:
        shown = "\n  ".join(problems[:20])
        raise SystemExit(f"error: {len(problems)} ground-truth refs have an unusable "
                         f"segmentation:\n  {shown}")
    return samples


def load_ground_truth(args) -> list[dict]:
    """Rows with id, image, question, no_target and a callable giving the target mask (at
    the image's size; under ``rela`` at 480x480, None when only crowd annotations remain)."""
    if args.protocol == "rela":
        samples = _load_samples(args)
        return [{"id": f"gres:{args.split}:{s.ref_id}:{s.sent_id}", "image": s.file_name,
                 "question": None, "no_target": s.no_target,
                 "target": (lambda s=s: rela_target(s))} for s in samples]
    if args.gt:
        rows = []
        with open(args.gt, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if "target_rle" not in row:
                    raise SystemExit(f"{args.gt}: line {lineno}: no 'target_rle' (write the "
                                     "ground truth with tokenize_gres.py)")
                rows.append({"id": row.get("id", f"row{lineno}"), "image": row["image"],
                             "question": _question(row), "no_target": bool(row["no_target"]),
                             "target": (lambda r=row["target_rle"]: rle_to_mask(r))})
        return rows
    samples = _load_samples(args)
    return [{"id": f"gres:{args.split}:{s.ref_id}:{s.sent_id}", "image": s.file_name,
             "question": None, "no_target": s.no_target,
             "target": (lambda s=s: target_masks(s).any(0) if not s.no_target
                        else np.zeros((s.height, s.width), bool))} for s in samples]


def protocol_notes(protocol: str, preds: list[dict]) -> list[str]:
    """What the predictions say about the caller's side of the protocol: under ``samtok``,
    questions other than SAMTok's fixed prompt are counted (generation settings are not in
    the predictions; say them when reporting)."""
    if protocol != "samtok":
        return []
    head, tail = EVAL_PROMPT.split("{phrase}")
    asked = [_question(p) for p in preds]
    other = sum(1 for q in asked if q and not (q.startswith(head) and q.endswith(tail)))
    notes = ["SAMTok's protocol generates without constrained decoding "
             "(SVP_CONSTRAIN_MASKS=0 swift infer); this tool cannot see how these were made"]
    if other:
        notes.append(f"{other} of {len(asked)} predictions were not asked with SAMTok's "
                     "prompt (tokenize val/test with tokenize_gres.py --prompts samtok)")
    return notes


def match(preds: list[dict], gts: list[dict], text_field: str) -> list[tuple[dict, dict]]:
    """Pair each prediction with its ground truth (id, else image+question, else order)."""
    by_id = {g["id"]: g for g in gts}
    by_key: dict[tuple, deque] = defaultdict(deque)
    for g in gts:
        by_key[(os.path.basename(g["image"]), g["question"])].append(g)
    pairs, unmatched = [], 0
    for i, p in enumerate(preds):
        if text_field not in p:
            raise SystemExit(f"prediction row {i + 1} has no {text_field!r} field "
                             f"(keys: {sorted(p)})")
        g = by_id.get(p.get("id"))
        if g is None:
            queue = by_key.get((_image_name(p), _question(p)))
            g = queue.popleft() if queue else None
        if g is None and len(preds) == len(gts):
            g = gts[i]
        if g is None:
            unmatched += 1
            continue
        pairs.append((p, g))
    if unmatched:
        print(f"warning: {unmatched} predictions matched no ground-truth row", file=sys.stderr)
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pred", required=True, help="JSONL with generated answers")
    ap.add_argument("--text-field", default="response")
    ap.add_argument("--gt", help="tokenize_gres.py output JSONL (with target_rle)")
    ap.add_argument("--grefs", help="grefs(unc).json (instead of --gt)")
    ap.add_argument("--instances", help="instances.json (with --grefs)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--image-root", required=True)
    ap.add_argument("--codec", required=True, help="builtin:PATH or samtok:DIR")
    ap.add_argument("--out", required=True, help="results JSON (metrics + per sample)")
    ap.add_argument("--overlays", help="folder for PNG overlays (truth green, prediction red)")
    ap.add_argument("--max-overlays", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--protocol", choices=["samtok", "tokens", "rela"], default="samtok",
                    help="samtok: SAMTok's evaluation (empty decoded mask = no target); "
                         "tokens: no mask tokens = no target; rela: ReLA's 480x480 scoring "
                         "without crowd annotations")
    args = ap.parse_args(argv)
    if not args.gt and not (args.grefs and args.instances):
        ap.error("give --gt, or --grefs and --instances")
    if args.protocol == "rela" and not (args.grefs and args.instances):
        ap.error("--protocol rela needs --grefs and --instances (crowd flags and polygons)")

    from PIL import Image
    from tqdm import tqdm

    from svp.common.overlay import mask_overlay
    from svp.masktok.codec import load_codec

    preds = [json.loads(x) for x in Path(args.pred).read_text(encoding="utf-8").splitlines()
             if x.strip()]
    gts = load_ground_truth(args)
    pairs = match(preds, gts, args.text_field)
    codec = load_codec(args.codec, device=args.device)
    overlay_dir = Path(args.overlays) if args.overlays else None
    if overlay_dir:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    answers = [pred.get(args.text_field) or "" for pred, _ in pairs]
    if args.protocol == "samtok":  # its script's reading of the codes, repairs included
        items = [[MaskAnswerItem(c) for c in parse_mask_tokens_samtok(text)]
                 for text in answers]
    else:
        items = [parse_gres_answer(text) for text in answers]
    # Each picture is read and run through the codec once, for all the samples that use it.
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, (_, gt) in enumerate(pairs):
        by_image[gt["image"]].append(i)
    scores: list = [None] * len(pairs)
    pred_rles: list = [None] * len(pairs)  # kept so data_tools/visualize.py needs no codec
    notes = protocol_notes(args.protocol, [pred for pred, _ in pairs])
    skipped_crowd = 0
    for name, idxs in tqdm(by_image.items(), desc="eval gres", unit="image"):
        image = Image.open(Path(args.image_root) / name).convert("RGB")
        codes = [list(it.codes) for i in idxs for it in items[i]]
        decoded = codec.decode(image, codes) if codes else None
        start = 0
        size = (image.height, image.width)
        for i in idxs:
            gt = pairs[i][1]
            target = gt["target"]()
            n = len(items[i])
            pred_mask = decoded[start:start + n].any(0) if n else np.zeros(size, bool)
            start += n
            pred_rles[i] = mask_to_rle(pred_mask)
            if target is None:  # rela: every annotation of the target is crowd
                skipped_crowd += 1
                continue
            scored = resize_mask(pred_mask, RELA_SIZE) if args.protocol == "rela" else pred_mask
            empty = (not n) if args.protocol == "tokens" else (not scored.any())
            scores[i] = score_sample(gt["id"], scored, target, pred_no_target=empty,
                                     no_target=gt["no_target"])
            if overlay_dir and i < args.max_overlays:
                safe = gt["id"].replace(":", "_").replace("/", "_")
                mask_overlay(image, target, pred_mask, title=f"IoU {scores[i].iou:.2f}").save(
                    overlay_dir / f"{safe}.png")
    per_sample = [{**s.to_dict(), "n_pred_masks": len(it), "answer": text, "pred_rle": rle}
                  for s, it, text, rle in zip(scores, items, answers, pred_rles, strict=True)
                  if s is not None]
    metrics = gres_metrics([s for s in scores if s is not None])
    if skipped_crowd:
        notes.append(f"{skipped_crowd} samples skipped: every target annotation is crowd "
                     "(ReLA drops crowd annotations)")
    out = Path(args.out)
    write_atomic(out, json.dumps({"protocol": args.protocol, "notes": notes,
                                  "metrics": metrics, "samples": per_sample}, indent=1))
    print(f"protocol: {args.protocol}")
    for note in notes:
        print(f"note: {note}")
    print(format_metrics(metrics))
    print(f"per-sample results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
