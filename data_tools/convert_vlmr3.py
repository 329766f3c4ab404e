#!/usr/bin/env python
"""VLM-R3-style crop reasoning data to ms-swift messages with crop-tool calls.

    python data_tools/convert_vlmr3.py --input vlir.jsonl --image_base_path data/images \
        --output data/crop_sft.jsonl [--family qwen2_5_vl|qwen3_vl] [--crops-dir data/crops]

Input (JSONL, one image per line): ``{"image_path": "coco/train2017/x.jpg", "QnA": [{"Q": ...,
"A3": "<think>... {Crop person 1 [0.00, 141.43, 79.23, 480.00]} ...</think>
<answer>...</answer>"}]}``
with boxes in original-image pixels, or VLM-R3's own SFT release (a JSON list or JSONL of
``{"image_path", "question", "response_list": [...], "img_crop_list": [...]}``: the parts of
the answer, each crop after its part, boxes ``{"bbox_2d": [...]}`` in the pixels of the image
as VLM-R3's processor resized it, min/max pixels 3136/12845056; ``--release-crops recut``
cuts our crops from those boxes, ``keep`` trains on the release's own zoomed crops). Each QnA
becomes one row
``{"messages": [user "<image>Q", assistant A], "images": [image, crops...], "crop_space": ...}``
(``crop_space``: the coordinate space of the boxes, with the main image's model size for
Qwen2.5-VL, which the crop template checks against its own) where every crop
request (``{Crop ...}``, ``{"bbox_2d": ...}`` or a ``<tool_call>``) is rewritten as
``<tool_call>[x1, y1, x2, y2]</tool_call>`` **in the model's coordinate space** (--family:
Qwen2.5-VL pixels of the resized main image, Qwen3-VL 0..1000; ``pixel`` keeps the originals).

Crops: with --crops-dir each crop is cut now (svp/croptool/geometry.py policy, the same code
the template and the inference loop run), saved as PNG, and ``<image>`` follows its
``</tool_call>``; the rows then train with any Qwen-VL template. Without it, the rows carry
only the calls and the crop template (plugins/croptool.py) cuts the crops on the fly.

A QnA whose image is missing, whose text is empty or whose box is bad (non-numeric, NaN,
swapped corners, zero area, outside the image) is skipped; skips are counted by reason and
the first ones shown. Output is written atomically; a summary goes to OUT.summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from svp.common.image_check import open_rgb, row_kind
from svp.common.io import BadLine, atomic_path, iter_jsonl, read_json_document, write_atomic
from svp.common.settings import SettingsError
from svp.croptool import settings
from svp.croptool.geometry import (
    CropPolicy,
    check_box,
    format_tool_call,
    from_space,
    model_input_size,
    parse_tool_calls,
)

SHOW_FIRST = 10
_GEOMETRY_FAULTS = ("swapped corners", "zero-area", "box lies outside")  # check_box's reasons
# VLM-R3's crop-tool instruction, appended to every question by its SFT loader
# (qwenvl/data/data_qwen.py) and its GRPO trainer and agent; the format clause is the only
# part that names a call syntax
_VLMR3_INSTRUCTION = (
    "\nYou need to first think about the reasoning process in your mind, and then provide the "
    "answer. When thinking, you should call the \"crop\" tool (format: {call}) to focus on the "
    "key areas in the image. The reasoning process and the answer are included in the "
    "<think> </think> and <answer> </answer> tags respectively.")
PROMPT_SUFFIXES = {
    "vlmr3": _VLMR3_INSTRUCTION.format(call="<tool_call>[x1, y1, x2, y2]</tool_call>"),
    "vlmr3-verbatim": _VLMR3_INSTRUCTION.format(call='{"bbox_2d": [x1, y1, x2, y2]}'),
}


class Skip(Exception):
    """A QnA that cannot become a row; the message is its reason."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


# VLM-R3's processor bounds (its GRPOScriptArguments / SFT data_args): its release's boxes
# are pixels of the image resized within these
VLMR3_MIN_PIXELS, VLMR3_MAX_PIXELS = 3136, 12845056


def vlmr3_input_size(image_wh: tuple[int, int]) -> tuple[int, int]:
    """The size VLM-R3's Qwen2.5-VL processor gave an image of this size."""
    return model_input_size(*image_wh, 28, VLMR3_MIN_PIXELS, VLMR3_MAX_PIXELS)


def convert_answer(answer: str, image_wh: tuple[int, int], policy: CropPolicy | None,
                   source_wh: tuple[int, int] | None = None, problems: list | None = None,
                   first: int = 1) -> tuple[str, list[tuple[float, ...]]]:
    """Rewrite every crop request as a canonical tool call in the model's space; return the
    new text and the boxes as written (integers, model space). ``source_wh``: the boxes are
    pixels of the image resized to this size (VLM-R3's release), not original pixels.
    Raises Skip on a bad box; with ``problems`` (release rows, which VLM-R3 trains with their
    own crops whatever the box) a box of four finite numbers that fails the checks is
    converted as it is and its reason appended instead. ``first``: the number of the first
    call, for messages."""
    out, boxes, pos = [], [], 0
    for k, call in enumerate(parse_tool_calls(answer), first):
        if call.box is None:
            raise Skip("bad_box", f"crop {k}: {call.error}")
        box = call.box if source_wh is None else from_space(call.box, "resized", image_wh,
                                                              source_wh)
        checked, reason = check_box(box, *image_wh)
        if checked is None and problems is not None and reason.startswith(_GEOMETRY_FAULTS):
            problems.append(f"crop {k}: {reason}")
            checked = tuple(float(v) for v in box)
        if checked is None:
            raise Skip("bad_box", f"crop {k}: {reason}")
        model_box = checked if policy is None else policy.box_to_model(checked, image_wh)
        model_box = tuple(float(round(v)) for v in model_box)  # what the text will say
        out += [answer[pos:call.start], format_tool_call(model_box)]
        boxes.append(model_box)
        pos = call.end
    out.append(answer[pos:])
    return "".join(out), boxes


def read_records(path: Path) -> list[tuple[str, object]]:
    """(where, record or :class:`~svp.common.io.BadLine`) of a JSONL file or of a JSON list
    (the release): a JSONL line that is not UTF-8 or not JSON is one skipped row, named."""
    if path.suffix == ".json" and path.read_bytes().lstrip().startswith(b"["):
        try:
            records = read_json_document(path)
        except ValueError as exc:
            return [("file", BadLine(str(exc)))]
        return [(f"record {i}", rec) for i, rec in enumerate(records)]
    return [(f"line {n}", rec) for n, rec in iter_jsonl(path)]


def release_qna(rec: dict) -> dict:
    """VLM-R3's SFT release record as one QnA: its answer is the parts, each ending in a
    newline (as its loader appends one), ``crops`` the release's crop files in order."""
    q, parts = rec.get("question"), rec.get("response_list")
    crops = rec.get("img_crop_list") or []
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise Skip("malformed", "response_list is not a list of strings")
    if not isinstance(crops, list) or not all(isinstance(c, str) for c in crops):
        raise Skip("malformed", "img_crop_list is not a list of paths")
    parts = [p if p.endswith("\n") else p + "\n" for p in parts]
    return {"Q": q, "A3": "".join(parts), "parts": parts, "crops": crops}


def convert_release(qna: dict, image_wh: tuple[int, int], policy: CropPolicy | None,
                    source_wh: tuple[int, int], problems: list
                    ) -> tuple[list[str], list[tuple[float, ...]]]:
    """A release answer converted part by part (the parts, each with its calls rewritten, and
    all the boxes), so the release's crop i can follow part i as VLM-R3's loader puts it."""
    texts, boxes = [], []
    for part in qna["parts"]:
        text, part_boxes = convert_answer(part, image_wh, policy, source_wh, problems,
                                          first=len(boxes) + 1)
        texts.append(text)
        boxes += part_boxes
    return texts, boxes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--image_base_path", "--image-base-path", default="", dest="image_base_path")
    ap.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl", "pixel"],
                    help="coordinate space of the written boxes (the model you will train)")
    ap.add_argument("--crops-dir", "--crops_dir", type=Path, default=None, dest="crops_dir")
    ap.add_argument("--main-short", type=int, default=None,
                    help="main image shorter side (0: leave to the pixel budget); default "
                         "SVP_CROP_MAIN_SHORT, as training")
    ap.add_argument("--crop-max-short", type=int, default=None,
                    help="default SVP_CROP_MAX_SHORT, as training")
    ap.add_argument("--max-pixels", type=int, default=None,
                    help="the processor's pixel budget; default MAX_PIXELS (or "
                         "IMAGE_MAX_TOKEN_NUM) of this environment, resolved as ms-swift does "
                         "at training: run the converter with the training environment")
    ap.add_argument("--prompt-suffix", default="",
                    help="text appended to every question; 'vlmr3': VLM-R3's crop-tool "
                         "instruction with its call format written as ours (<tool_call>), "
                         "'vlmr3-verbatim': its text as is (it names {\"bbox_2d\": ...} "
                         "calls, which the rows do not use); default none")
    ap.add_argument("--release-crops", choices=["recut", "keep"], default="recut",
                    help="VLM-R3 release rows: cut our crops from the boxes (as our template "
                         "and inference loop do), or keep the release's own crop files")
    ap.add_argument("--limit", type=int, default=None, help="stop after N written rows")
    args = ap.parse_args(argv)

    if not args.input.is_file():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 2
    suffix = PROMPT_SUFFIXES.get(args.prompt_suffix, args.prompt_suffix)
    pixel_space = args.family == "pixel"
    # sizes crops (and, unless pixel_space, converts boxes); pixel data crops like Qwen2.5-VL
    try:  # the sizes and the pixel budget, from the environment or the flags, all checked
        config = settings.load().with_sizes(args.main_short, args.crop_max_short)
        args.main_short, args.crop_max_short = config.main_short, config.crop_max_short
        policy = config.policy("qwen2_5_vl" if pixel_space else args.family,
                               max_pixels=args.max_pixels)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    budget = [(policy.factor, policy.min_pixels, policy.max_pixels)]
    base = Path(args.image_base_path) if args.image_base_path else args.input.parent
    records = read_records(args.input)
    rows, counts, shown = [], Counter(), []

    def skip(where: str, exc: Skip) -> None:
        counts[f"skipped_{exc.kind}"] += 1
        if len(shown) < SHOW_FIRST:
            shown.append(f"{args.input}:{where}: {exc}")

    for where, rec in tqdm(records, desc="convert", unit="image"):
        if args.limit is not None and len(rows) >= args.limit:
            break
        release = isinstance(rec, dict) and "response_list" in rec
        try:
            if isinstance(rec, BadLine):
                raise Skip("malformed", str(rec))
            if not isinstance(rec, dict):
                raise Skip("malformed", "row is not a JSON object")
            rel = rec.get("image_path")
            qnas = [release_qna(rec)] if release else rec.get("QnA")
            if not isinstance(rel, str) or not rel:
                raise Skip("malformed", "no image_path")
            if not isinstance(qnas, list) or not qnas:
                raise Skip("malformed", "no QnA list")
            path = Path(rel) if Path(rel).is_absolute() else base / rel
            # read as training will: a truncated or 16-bit file, a bomb or an aspect ratio
            # the processor refuses is a named skip (one such row aborted the whole run)
            image, check = open_rgb(path, budget)
            if image is None:
                raise Skip(row_kind(check), f"{path}: {check.error}")
            image_wh = image.size
        except Skip as exc:
            skip(where, exc)
            continue
        source_wh = vlmr3_input_size(image_wh) if release else None
        # recorded in every row: the crop template refuses rows of another space (Qwen2.5-VL
        # pixels offered to the Qwen3-VL template would be read as 0..1000 and cut elsewhere)
        crop_space = "pixel" if pixel_space else policy.data_space(*image_wh)
        for q_i, qna in enumerate(qnas):
            if args.limit is not None and len(rows) >= args.limit:
                break
            try:
                q = qna.get("Q") if isinstance(qna, dict) else None
                a = qna.get("A3") if isinstance(qna, dict) else None
                if not (isinstance(q, str) and q.strip() and isinstance(a, str) and a.strip()):
                    raise Skip("empty_text", "Q or A3 missing or empty")
                problems: list[str] = []
                if release:
                    parts, boxes = convert_release(qna, image_wh, None if pixel_space
                                                   else policy, source_wh, problems)
                    text = "".join(parts)
                else:
                    text, boxes = convert_answer(a, image_wh, None if pixel_space else policy,
                                                 source_wh)
                images = [str(path.resolve())]
                keep = bool(release and qna["crops"] and args.release_crops == "keep")
                recut = None
                if release and not keep and args.crops_dir and boxes and not problems:
                    try:  # recut: a box our policy cannot cut is trained with the release's
                        recut = _attach_crops(text, boxes, image, policy, args.crops_dir,
                                              f"{path.stem}_{where.split()[-1]}_{q_i}",
                                              pixel_space)
                    except Skip as exc:
                        if not qna["crops"]:
                            raise
                        problems.append(str(exc))
                if problems:
                    if not (release and qna["crops"]):
                        raise Skip("bad_box", "; ".join(problems))
                    keep = True  # VLM-R3 trains the row, with its own crops
                    counts["release_crops_kept_for_bad_boxes"] += 1
                    if len(shown) < SHOW_FIRST:
                        shown.append(f"{args.input}:{where}: release crops kept: "
                                     f"{'; '.join(problems)}")
                if keep:
                    text, crops, unused = _release_crops(parts, qna, base)
                    images += crops
                    counts["release_crops_unused"] += unused
                elif args.crops_dir and boxes:
                    text, crops = recut if recut is not None else _attach_crops(
                        text, boxes, image, policy, args.crops_dir,
                        f"{path.stem}_{where.split()[-1]}_{q_i}", pixel_space)
                    images += crops
                counts["crops"] += len(boxes)
                counts["with_crops" if boxes else "without_crops"] += 1
            except Skip as exc:
                skip(f"{where} QnA {q_i}", exc)
                continue
            rows.append({"messages": [
                {"role": "user", "content": "<image>" + q.strip() + suffix},
                {"role": "assistant", "content": text}], "images": images,
                "crop_space": crop_space})
    write_atomic(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    counts["written"] = len(rows)
    summary = {"input": str(args.input), "output": str(args.output), "family": args.family,
               "coordinate_space": "pixel" if pixel_space else policy.space,
               "main_short": args.main_short, "crop_max_short": args.crop_max_short,
               "min_pixels": policy.min_pixels, "max_pixels": policy.max_pixels,
               "crops_dir": str(args.crops_dir) if args.crops_dir else None, **counts}
    write_atomic(args.output.with_suffix(".summary.json"), json.dumps(summary, indent=2) + "\n")
    for s in shown:
        print(s, file=sys.stderr)
    skipped = {k: v for k, v in counts.items() if k.startswith("skipped")}
    n_skipped = sum(skipped.values())
    if n_skipped > len(shown):
        print(f"... and {n_skipped - len(shown)} more skips", file=sys.stderr)
    print(f"{len(rows)} rows written ({counts['with_crops']} with crops, "
          f"{counts['crops']} crops), "
          f"{n_skipped} skipped{' ' + json.dumps(skipped) if skipped else ''} -> {args.output}")
    return 0


def _release_crops(parts: list[str], qna: dict, base: Path) -> tuple[str, list[str], int]:
    """The release's own crops where VLM-R3's loader puts them: crop i right after part i
    (each part ends in its newline), wherever the part's call is; crops beyond the last part
    are not used (its loader never reaches them; returned as a count). The crop template
    takes an ``<image>`` that follows a call before the next call as that call's crop."""
    crops = qna["crops"]
    text, files = [], []
    for i, part in enumerate(parts):
        text.append(part)
        if i < len(crops):
            path = Path(crops[i]) if Path(crops[i]).is_absolute() else base / crops[i]
            if not path.is_file():
                raise Skip("missing_image", f"crop {i + 1}: {path}")
            text.append("<image>")
            files.append(str(path.resolve()))
    return "".join(text), files, max(0, len(crops) - len(parts))


def _attach_crops(text: str, boxes, image: Image.Image, policy: CropPolicy, crops_dir: Path,
                  stem: str, pixel_space: bool) -> tuple[str, list[str]]:
    """Insert ``<image>`` after each ``</tool_call>`` and save the crops it refers to."""
    crops_dir.mkdir(parents=True, exist_ok=True)
    parts, files, pos = [], [], 0
    for k, (call, box) in enumerate(zip(parse_tool_calls(text), boxes, strict=True)):
        # the crop of the box *as written* (rounded, model space), cut by the function the
        # template and the inference loop call, so pre-cut files equal on-the-fly crops
        if pixel_space:
            rect, reason = policy.rectangle(box, *image.size)
            if rect is None:
                raise Skip("bad_box", f"crop {k + 1}: {reason}")
            crop = policy.crop(image, box)
        else:
            crop, _, reason = policy.execute(image, box)
            if crop is None:
                raise Skip("bad_box", f"crop {k + 1}: {reason} after rounding")
        out = crops_dir / f"{stem}_{k}.png"
        with atomic_path(out) as tmp:
            crop.save(tmp)
        files.append(str(out.resolve()))
        parts += [text[pos:call.end], "<image>"]
        pos = call.end
    parts.append(text[pos:])
    return "".join(parts), files


if __name__ == "__main__":
    sys.exit(main())
