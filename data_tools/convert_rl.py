#!/usr/bin/env python
"""VLM-R3-style RL questions to R-GRPO rows for ``swift rlhf --rlhf_type grpo``.

    python data_tools/convert_rl.py --input rl.jsonl --image_base_path data/images \
        --output data/rgrpo.jsonl [--prompt-suffix " ..."]

Input: JSONL (or a JSON list) of ``{"image_path": ..., "question": ..., "answer": ...}`` as in
VLM-R3's RL set (``image``/``solution`` are accepted too), optionally ``"gt_boxes"`` (or
``"bbox"``): one box or a list of boxes ``[x1, y1, x2, y2]`` in original-image pixels (what
annotation files store; ``rgrpo_region_iou`` compares the executed crops with them), and any
other columns (``source``, ...), which are kept. Output rows:
``{"messages": [{"role": "user", "content": "<image>" + question + suffix}],
"images": [absolute path], "solution": answer, "gt_boxes": [[...]], ...}``. ``solution`` is a
string, or, when any row lists several acceptable answers, a list of strings in every row
(one column type, as the dataset loader needs).

``--prompt-suffix`` must be the suffix the SFT data was built with, so the policy sees the
prompt it was trained on. A row with a missing image, an empty question or answer is skipped;
a bad box (swapped, zero area, outside, non-numeric) is dropped from ``gt_boxes``, clamped
when partly outside; both are counted and the first ones shown. Output is written atomically
with a summary beside it (OUT.summary.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from svp.common.image_check import check_image, row_kind
from svp.common.io import BadLine, iter_jsonl, read_json_document, write_atomic
from svp.common.settings import SettingsError, qwen_budgets
from svp.croptool.geometry import check_box

SHOW_FIRST = 10
RESERVED = {"image_path", "image", "question", "answer", "solution", "gt_boxes", "bbox",
            "messages", "images"}


def read_rows(path: Path) -> list[tuple[str, object]]:
    """(where, row or :class:`~svp.common.io.BadLine`) of a JSON list or JSONL file: a JSONL
    line that is not UTF-8 or not JSON is one skipped row, named by its line; a JSON list
    that does not parse raises ValueError naming the line."""
    if path.read_bytes().lstrip().startswith(b"["):
        return [(f"row {i}", r) for i, r in enumerate(read_json_document(path), 1)]
    return [(f"line {n}", r) for n, r in iter_jsonl(path)]


def gt_boxes_of(rec: dict, image_wh, counts: Counter, notes: list, where: str) -> list | None:
    raw = rec.get("gt_boxes", rec.get("bbox"))
    if raw is None:
        return None
    if isinstance(raw, list) and len(raw) == 4 and not any(isinstance(v, list) for v in raw):
        raw = [raw]
    boxes = []
    for b in raw if isinstance(raw, list) else [raw]:
        box, reason = check_box(b, *image_wh) if isinstance(b, list) else (None, "not a list")
        if box is None:
            counts["dropped_gt_box"] += 1
            if len(notes) < SHOW_FIRST:
                notes.append(f"{where}: gt box {b!r} dropped: {reason}")
            continue
        boxes.append([round(v, 2) for v in box])
    return boxes or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--image_base_path", "--image-base-path", default="", dest="image_base_path")
    ap.add_argument("--prompt-suffix", "--prompt_suffix", default="", dest="prompt_suffix",
                    help="appended to every question; use the SFT data's suffix")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    if not args.input.is_file():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 2
    try:
        rows_in = read_rows(args.input)
        budgets = qwen_budgets()  # pictures the processor would refuse at this MAX_PIXELS
    except (ValueError, SettingsError) as exc:
        print(f"error: {args.input}: {exc}", file=sys.stderr)
        return 2
    base = Path(args.image_base_path) if args.image_base_path else args.input.parent
    out, counts, notes = [], Counter(), []

    def skip(where, kind, detail):
        counts[f"skipped_{kind}"] += 1
        if len(notes) < SHOW_FIRST:
            notes.append(f"{where}: skipped ({kind}): {detail}")

    for at, rec in tqdm(rows_in, desc="convert", unit="row"):
        if args.limit is not None and len(out) >= args.limit:
            break
        where = f"{args.input}:{at}"
        if isinstance(rec, BadLine):
            skip(where, "malformed", str(rec))
            continue
        if not isinstance(rec, dict):
            skip(where, "malformed", "not a JSON object")
            continue
        rel = rec.get("image_path", rec.get("image"))
        question = rec.get("question")
        answer = rec.get("answer", rec.get("solution"))
        if not isinstance(rel, str) or not rel:
            skip(where, "malformed", "no image_path")
            continue
        if not isinstance(question, str) or not question.strip():
            skip(where, "empty_text", "no question")
            continue
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            skip(where, "empty_text", "no answer")
            continue
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        check = check_image(path, budgets)  # as training reads it: decoded, limits applied
        if check.error:
            skip(where, row_kind(check), f"{path}: {check.error}")
            continue
        wh = check.size
        row = {"messages": [{"role": "user", "content": "<image>" + question.strip()
                             + args.prompt_suffix}],
               "images": [str(path.resolve())],
               "solution": [str(a) for a in answer] if isinstance(answer, list) else str(answer)}
        boxes = gt_boxes_of(rec, wh, counts, notes, where)
        if boxes:
            row["gt_boxes"] = boxes
            counts["with_gt_boxes"] += 1
        row.update({k: v for k, v in rec.items() if k not in RESERVED})
        out.append(row)
    if any(isinstance(r["solution"], list) for r in out):  # one column type for pyarrow
        for r in out:
            r["solution"] = r["solution"] if isinstance(r["solution"], list) else [r["solution"]]
    write_atomic(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    counts["written"] = len(out)
    summary = {"input": str(args.input), "output": str(args.output),
               "prompt_suffix": args.prompt_suffix, **counts}
    write_atomic(args.output.with_suffix(".summary.json"), json.dumps(summary, indent=2) + "\n")
    for n in notes:
        print(n, file=sys.stderr)
    skipped = {k: v for k, v in counts.items() if k.startswith(("skipped", "dropped"))}
    print(f"{len(out)} rows written ({counts['with_gt_boxes']} with gt boxes), "
          f"{json.dumps(skipped) if skipped else 'nothing skipped'} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
