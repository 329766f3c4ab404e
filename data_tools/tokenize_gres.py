#!/usr/bin/env python
"""gRefCOCO (GRES) to mask-token conversations (SAMTok format), sharded and resumable.

    python data_tools/tokenize_gres.py --grefs 'grefs(unc).json' --instances instances.json \
        --image-root coco/train2014 --split train --codec builtin:runs/codec/codec.pt \
        --out data/gres --name gres_train

Every sentence becomes one LLaVA row: ``<image>`` + a question (a random template for train,
SAMTok's fixed evaluation prompt for val/test: ``--prompts``), and the answer
```` ```json\\n[{"mask_2d": "<|mt_start|>...<|mt_end|>", "label": ...}]\\n``` ```` with the
targets left to right (several: labelled ``one of the {sentence}``, joined with ``",\\n"``, as
SAMTok's released data; ``--answer-style script`` as its tokenize_gres.py writes it,
``compact`` for one line), or ``No target.``. Training questions are SAMTok's 16 templates
(``--templates ours`` for our 6). Rows also carry
``id``, ``ref_id``, ``ann_ids``, ``no_target`` and ``target_rle`` (the union of the targets),
so ``eval_gres.py`` can score against the tokenized file alone. Shards are written
atomically to OUT/shards/ and skipped when rerun (resume); at the end they are joined into
OUT/NAME.jsonl, a registry entry is added to OUT/datasets.yaml and a summary (written,
no-target, skipped per reason) written to OUT/NAME.summary.json. Shards are reused only by a
rerun with the same inputs, arguments and codec weights (svp/common/sharded.py), and one run
at a time writes into OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

from svp.common.image_check import open_rgb
from svp.common.io import OutputLocked, file_sha256, output_lock, write_atomic
from svp.common.settings import SettingsError, qwen_budgets
from svp.common.sharded import run_sharded, summary_line, write_registry_entry
from svp.masktok.codec import codec_fingerprint, load_codec, masks_to_boxes
from svp.masktok.gres_data import (
    GresError,
    GresSample,
    answer,
    iter_batches,
    load_gres,
    question,
    target_masks,
    union_rle,
)

# skip reasons per kind of image problem (svp/common/image_check.py)
IMAGE_REASONS = {"missing": "image file missing", "unreadable": "image unreadable",
                 "too large": "image too large", "wide samples": "image has 16/32-bit samples",
                 "aspect ratio": "image aspect ratio beyond the processor's"}


def load_image(root: Path, name: str, budgets=()):
    """(RGB picture, None) or (None, skip reason), refusing what training would refuse (a
    truncated or 16-bit file, a bomb, an aspect ratio the processor rejects at the run's
    pixel budget); the picture is named on stderr."""
    path = root / name
    img, check = open_rgb(path, budgets)
    if img is None:
        if check.kind != "missing":
            print(f"skipped: {path}: {check.error}", file=sys.stderr)
        return None, IMAGE_REASONS[check.kind]
    return img, None


def _load_image(root: Path, sample: GresSample, budgets=()):
    img, reason = load_image(root, sample.file_name, budgets)
    if img is not None and img.size != (sample.width, sample.height):
        return None, "image size differs from instances.json"
    return img, reason


def report_problems(problems: list[str], shown: int = 20) -> None:
    """Name the refs skipped for an unusable annotation (counted in the summary too)."""
    for line in problems[:shown]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(problems) > shown:
        print(f"skipped: ... and {len(problems) - shown} more refs", file=sys.stderr)


def encode_refs(groups: list[list[GresSample]], codec, image_root: Path, batch_size: int,
                counts: Counter, budgets=()) -> dict[int, tuple]:
    """ref_id -> (codes or None, boxes or None, union RLE) for the refs that can be written.

    Refs go to the codec ``batch_size`` at a time; within a batch each picture is decoded
    once however many refs point at it, and only codes, boxes and the RLE are kept, so a
    shard's memory does not grow with its number of images.
    """
    out: dict[int, tuple] = {}
    for batch in iter_batches(groups, batch_size):
        images: dict[str, tuple] = {}
        pending = []
        for group in batch:
            first = group[0]
            if first.file_name not in images:
                images[first.file_name] = _load_image(image_root, first, budgets)
            img, reason = images[first.file_name]
            if img is None:
                counts[f"skipped: {reason}"] += len(group)
                continue
            masks = target_masks(first)
            if len(masks) and (masks.reshape(len(masks), -1).sum(1) == 0).any():
                counts["skipped: empty target mask"] += len(group)
                continue
            rle = union_rle(masks, first.height, first.width)
            if first.no_target:
                out[first.ref_id] = (None, None, rle)
            else:
                pending.append((first.ref_id, img, masks, rle))
        if pending:
            codes = codec.encode_batch([p[1] for p in pending], [p[2] for p in pending])
            for (ref_id, _, masks, rle), c in zip(pending, codes, strict=True):
                out[ref_id] = (c, masks_to_boxes(masks), rle)
    return out


def tokenize_shard(samples: list[GresSample], codec, image_root: Path, split: str,
                   batch_size: int, seed: int, style: str = "release",
                   fixed_prompt: bool = False, budgets=(),
                   templates: str = "samtok") -> tuple[list[dict], Counter]:
    """Rows for one shard; sentences of one ref share one encoding of its masks."""
    counts: Counter = Counter()
    rng = random.Random(seed)
    by_ref: dict[int, list[GresSample]] = {}
    for s in samples:
        by_ref.setdefault(s.ref_id, []).append(s)
    encoded = encode_refs(list(by_ref.values()), codec, image_root, batch_size, counts,
                          budgets)
    rows = []
    for s in samples:
        if s.ref_id not in encoded:
            continue
        codes, boxes, rle = encoded[s.ref_id]
        reply = "No target." if s.no_target else answer(codes, boxes, s.sentence, style)
        rows.append({
            "id": f"gres:{split}:{s.ref_id}:{s.sent_id}",
            "image": s.file_name,
            "conversations": [{"from": "human", "value": question(s, rng, fixed_prompt, templates)},
                              {"from": "gpt", "value": reply}],
            "ref_id": s.ref_id, "sent_id": s.sent_id, "image_id": s.image_id,
            "ann_ids": s.ann_ids, "no_target": s.no_target,
            "height": s.height, "width": s.width, "target_rle": rle,
        })
        counts["written"] += 1
        counts["no_target"] += int(s.no_target)
    return rows, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grefs", required=True, help="grefs(unc).json")
    ap.add_argument("--instances", required=True, help="COCO instances.json")
    ap.add_argument("--image-root", required=True, help="folder of the COCO images")
    ap.add_argument("--split", default="train", help="train | val | testA | testB | all")
    ap.add_argument("--codec", required=True, help="builtin:PATH or samtok:DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default=None, help="dataset name (default gres_SPLIT)")
    ap.add_argument("--shard-size", type=int, default=2000, help="sentences per shard")
    ap.add_argument("--batch-size", type=int, default=16, help="refs per codec call")
    ap.add_argument("--limit", type=int, default=None, help="first N sentences only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--answer-style", choices=["release", "script", "compact"],
                    default="release",
                    help="release: the released data's form (quoted mask strings joined with "
                         "',\\n'; one target the bare sentence, several 'one of the "
                         "{sentence}'); script: as SAMTok's tokenize_gres.py writes it (every "
                         "target 'one of the {sentence}', mask unquoted); compact: bare "
                         "sentence, one line")
    ap.add_argument("--templates", choices=["samtok", "ours"], default="samtok",
                    help="training questions: samtok (the 16 templates of SAMTok's "
                         "tokenize_gres.py) or ours (our 6)")
    ap.add_argument("--prompts", choices=["auto", "random", "samtok"], default="auto",
                    help="questions: random templates, or SAMTok's fixed evaluation prompt "
                         "'Please segment {phrase} in this image.' (auto: samtok for val/test "
                         "splits, random for train)")
    args = ap.parse_args(argv)

    split = None if args.split == "all" else args.split
    name = args.name or f"gres_{args.split}"
    problems: list[str] = []
    try:
        samples, load_skipped = load_gres(args.grefs, args.instances, split, problems)
    except GresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report_problems(problems)
    if args.limit is not None:
        samples = samples[: args.limit]
    if not samples:
        print(f"error: no sentences for split {args.split!r} in {args.grefs}", file=sys.stderr)
        return 2
    out = Path(args.out)
    fixed = args.prompts == "samtok" or (args.prompts == "auto" and args.split != "train")
    try:
        with output_lock(out):
            return _write(args, samples, load_skipped, out, name, fixed)
    except (OutputLocked, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _write(args, samples, load_skipped, out: Path, name: str, fixed: bool) -> int:
    """Tokenize into ``out`` (locked by the caller); shards are keyed by every input and
    argument the rows depend on, so a rerun with any of them changed starts afresh."""
    fingerprint = codec_fingerprint(args.codec)
    budgets = qwen_budgets()  # images training would refuse at this MAX_PIXELS are skipped
    key = {"tool": "tokenize_gres", "format": 2, "grefs": file_sha256(args.grefs),
           "instances": file_sha256(args.instances),
           "image_root": os.path.abspath(args.image_root), "split": args.split,
           "limit": args.limit, "seed": args.seed, "answer_style": args.answer_style,
           "prompts": "samtok" if fixed else "random", "codec": fingerprint,
           "templates": args.templates,
           "device": args.device, "batch_size": args.batch_size, "budgets": budgets}
    codec = load_codec(args.codec, device=args.device)
    joined, totals = run_sharded(
        samples, args.shard_size, out, name,
        lambda shard, k: tokenize_shard(shard, codec, Path(args.image_root), args.split,
                                        args.batch_size, args.seed + k, args.answer_style,
                                        fixed, budgets, args.templates),
        desc=f"tokenize {name}", key=key)
    totals["written"] += 0  # in the summary even when nothing was written
    for reason, n in load_skipped.items():
        totals[f"skipped: {reason}"] += n
    write_registry_entry(out, name, joined, os.path.abspath(args.image_root))
    summary = {"name": name, "split": args.split, "sentences": len(samples),
               "codec": args.codec, "codec_fingerprint": fingerprint,
               "answer_style": args.answer_style, "templates": args.templates,
               "prompts": "samtok" if fixed else "random", **dict(sorted(totals.items()))}
    write_atomic(out / f"{name}.summary.json", json.dumps(summary, indent=2))
    print(summary_line(name, totals, joined))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
