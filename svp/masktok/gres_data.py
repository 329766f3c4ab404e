"""gRefCOCO (GRES) annotations to mask-token conversations, without any model code.

Inputs are the gRefCOCO files: ``grefs(unc).json`` (a list of referring expressions, each
with an ``ann_id`` list; ``[-1]`` means the expression refers to nothing) and the COCO
``instances.json`` (polygon or RLE segmentations). Each sentence becomes one conversation:
the question from a template, the answer a fenced JSON list of ``{mask_2d, label}`` with the
targets ordered left to right by box centre (then top to bottom), or ``No target.``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svp.masktok.coco import annotation_to_mask, mask_to_rle, segmentation_problem
from svp.masktok.tokens import MaskAnswerItem, format_gres_answer, sort_left_to_right

# Training question templates. ``samtok``: the 16 of SAMTok's tokenize_gres.py (the
# SEG_QUESTIONS list of the LISA / Sa2VA line: four phrasings with and without a final mark,
# then the same four again), filled as ``.format(class_name=sentence)``; the released data's
# example "Please identify and segment the front black chair in this image" is one of them.
# ``ours``: the six we used before.
_SAMTOK_PHRASINGS = (
    ("Can you segment the {class_name} in this image", "?"),
    ("Please segment {class_name} in this image", "."),
    ("What is {class_name} in this image? Please respond with segmentation mask", "."),
    ("What is {class_name} in this image? Please output segmentation mask", "."),
    ("Could you provide a segmentation mask for the {class_name} in this image", "?"),
    ("Please identify and segment the {class_name} in this image", "."),
    ("Where is the {class_name} in this picture? Please respond with a segmentation mask", "."),
    ("Can you highlight the {class_name} in this image with a segmentation mask", "?"),
)
SEG_QUESTIONS_SAMTOK = tuple(
    t + mark if final else t
    for block in (_SAMTOK_PHRASINGS[:4], _SAMTOK_PHRASINGS[4:])
    for final in (True, False) for t, mark in block)
SEG_QUESTIONS_OURS = (
    "Please segment {class_name} in this image.",
    "Can you segment {class_name} in this image?",
    "Please identify and segment {class_name} in this image.",
    "Where is {class_name} in this image? Please answer with segmentation masks.",
    "Segment {class_name}.",
    "What is {class_name} in this image? Please respond with its segmentation mask.",
)
QUESTION_SETS = {"samtok": SEG_QUESTIONS_SAMTOK, "ours": SEG_QUESTIONS_OURS}


@dataclass
class GresSample:
    """One sentence of one referring expression, with everything needed to write it."""

    ref_id: int
    sent_id: int
    image_id: int
    file_name: str
    width: int
    height: int
    sentence: str
    ann_ids: list[int]  # [] when the expression refers to nothing
    segmentations: list = field(default_factory=list)  # one per ann id
    crowd: list = field(default_factory=list)  # iscrowd per ann id (ReLA drops those)

    @property
    def no_target(self) -> bool:
        return not self.ann_ids

    @property
    def key(self) -> str:
        return f"{self.ref_id}:{self.sent_id}"


class GresError(ValueError):
    """A problem with the gRefCOCO files themselves (named file and field)."""


def load_gres(grefs_path: str | Path, instances_path: str | Path,
              split: str | None = None,
              problems: list[str] | None = None) -> tuple[list[GresSample], dict]:
    """All sentences of ``split`` (or every split when None) as samples, in file order.

    Returns ``(samples, skipped)`` where ``skipped`` counts the sentences dropped per reason
    (an annotation id or image missing from instances.json, an empty sentence, a
    segmentation that cannot be rasterised: ``bad segmentation (<kind>)``). Every
    segmentation a kept sample uses has been checked here (:func:`segmentation_problem`), so
    rasterising it later cannot crash or hang; ``problems``, when given, receives one line
    per dropped ref naming the file, ref, annotation and reason.
    """
    return samples_from_refs(read_json(grefs_path), str(grefs_path),
                             read_json(instances_path), str(instances_path), split, problems)


def samples_from_refs(grefs: list, grefs_path: str, inst: dict, instances_path: str,
                      split: str | None = None,
                      problems: list[str] | None = None) -> tuple[list[GresSample], dict]:
    """:func:`load_gres` on refs already read: gRefCOCO's JSON or the ``refs(unc).p`` of
    RefCOCO/+/g (one int ``ann_id`` per ref; read by :mod:`svp.evaluation.refer`). The
    paths only name the files in errors."""
    if not isinstance(grefs, list):
        raise GresError(f"{grefs_path}: expected a list of referring expressions")
    if not isinstance(inst, dict) or "annotations" not in inst or "images" not in inst:
        raise GresError(f"{instances_path}: expected COCO instances with 'images' and "
                        "'annotations'")
    anns = {a["id"]: a for a in inst["annotations"]}
    images = {im["id"]: im for im in inst["images"]}
    samples: list[GresSample] = []
    skipped: Counter = Counter()
    for i, ref in enumerate(grefs):
        if split is not None and ref.get("split") != split:
            continue
        try:
            ann_ids = ref["ann_id"]
            image_id = ref["image_id"]
            sentences = ref["sentences"]
        except (KeyError, TypeError) as exc:
            raise GresError(f"{grefs_path}: ref #{i} lacks {exc}") from exc
        if isinstance(ann_ids, int):  # legacy single id
            ann_ids = [ann_ids]
        ann_ids = [a for a in ann_ids if a != -1]
        if ref.get("no_target") and ann_ids:
            ann_ids = []
        if image_id not in images:
            skipped["image not in instances.json"] += len(sentences)
            continue
        missing = [a for a in ann_ids if a not in anns]
        if missing:
            skipped["annotation id not in instances.json"] += len(sentences)
            continue
        im = images[image_id]
        bad = _first_bad_segmentation(ann_ids, anns, im)
        if bad is not None:
            ann_id, err = bad
            skipped[f"bad segmentation ({err.kind})"] += len(sentences)
            if problems is not None:
                problems.append(f"{grefs_path}: ref {ref.get('ref_id', i)} "
                                f"({len(sentences)} sentences): annotation {ann_id} of "
                                f"{instances_path}: {err}")
            continue
        for j, sent in enumerate(sentences):
            text = (sent.get("sent") or sent.get("raw") or "").strip()
            if not text:
                skipped["empty sentence"] += 1
                continue
            samples.append(GresSample(
                ref_id=ref.get("ref_id", i), sent_id=sent.get("sent_id", j), image_id=image_id,
                file_name=im["file_name"], width=im["width"], height=im["height"],
                sentence=text, ann_ids=list(ann_ids),
                segmentations=[anns[a]["segmentation"] for a in ann_ids],
                crowd=[bool(anns[a].get("iscrowd", 0)) for a in ann_ids]))
    return samples, dict(skipped)


def _first_bad_segmentation(ann_ids: list[int], anns: dict, image: dict):
    """(annotation id, SegmentationError) of the first unusable target, or None."""
    for a in ann_ids:
        err = segmentation_problem(anns[a].get("segmentation"), image["height"],
                                   image["width"])
        if err is not None:
            return a, err
    return None


def read_json(path: str | Path):
    """A JSON annotation file, or a GresError naming the file and the line that is wrong."""
    p = Path(path)
    if not p.is_file():
        raise GresError(f"file not found: {p}")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise GresError(f"{p}: line {line}: not UTF-8 (byte 0x{data[exc.start]:02x} at "
                        f"offset {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GresError(f"{p}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc


def target_masks(sample: GresSample) -> np.ndarray:
    """[N, H, W] bool, one per annotation (polygon parts merged); [0, H, W] for no target."""
    if sample.no_target:
        return np.zeros((0, sample.height, sample.width), bool)
    return np.stack([annotation_to_mask(s, sample.height, sample.width)
                     for s in sample.segmentations])


# SAMTok's evaluation prompt (its GRES eval scripts): fixed, the phrase stripped and lower-cased
EVAL_PROMPT = "Please segment {phrase} in this image."


def question(sample: GresSample, rng: random.Random, fixed: bool = False,
             templates: str = "samtok") -> str:
    """A random training template of the ``templates`` set (:data:`QUESTION_SETS`), or with
    ``fixed`` the evaluation prompt of SAMTok's protocol (what ``eval_gres --protocol samtok``
    expects of val/test rows)."""
    if fixed:
        return "<image>\n" + EVAL_PROMPT.format(phrase=sample.sentence.strip().lower())
    return "<image>\n" + rng.choice(QUESTION_SETS[templates]).format(class_name=sample.sentence)


def answer(codes: np.ndarray, boxes: np.ndarray, label: str, style: str = "release") -> str:
    """The assistant answer for codes [N, 2] whose boxes [N, 4] give the left-to-right order.
    ``release``: the released data's form (quoted mask strings, items joined with
    ``",\n"``; one target keeps the bare sentence, as its example shows, several are each
    ``one of the {sentence}``); ``script``: what SAMTok's tokenize_gres.py writes (every
    target ``one of the {sentence}``, the mask string unquoted); ``compact``: the bare
    sentence, one line."""
    order = sort_left_to_right(boxes.tolist())
    if style == "script" or (style == "release" and len(order) > 1):
        label = f"one of the {label}"
    return format_gres_answer([MaskAnswerItem((int(codes[i, 0]), int(codes[i, 1])), label)
                               for i in order], style)


RELA_SIZE = 480  # ReLA's configs/referring_*.yaml INPUT.IMAGE_SIZE


def rela_target(sample: GresSample, size: int = RELA_SIZE) -> np.ndarray | None:
    """The target as ReLA's evaluator sees it: crowd annotations dropped, polygons scaled to
    the ``size`` x ``size`` resized image and rasterised there (RLE parts decoded at full
    size and resized nearest, as detectron2 transforms a segmentation). ``None`` when every
    annotation of a targeted sample is crowd (ReLA has no defined target for it)."""

    from svp.masktok.coco import annotation_to_mask

    out = np.zeros((size, size), bool)
    kept = [seg for seg, crowd in zip(sample.segmentations, sample.crowd or
                                      [False] * len(sample.segmentations), strict=True)
            if not crowd]
    if sample.no_target:
        return out
    if not kept:
        return None
    sx, sy = size / sample.width, size / sample.height
    for seg in kept:
        if isinstance(seg, list):
            scaled = [[v * (sx if i % 2 == 0 else sy) for i, v in enumerate(part)]
                      for part in seg]
            out |= annotation_to_mask(scaled, size, size)
        else:
            full = annotation_to_mask(seg, sample.height, sample.width)
            out |= resize_mask(full, size)
    return out


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to ``size`` x ``size``."""
    from PIL import Image

    im = Image.fromarray(np.asarray(mask).astype(np.uint8) * 255)
    return np.asarray(im.resize((size, size), Image.NEAREST)) > 127


def union_rle(masks: np.ndarray, height: int, width: int) -> dict:
    """The union of the targets as RLE with string counts (JSON-friendly)."""
    union = masks.any(0) if len(masks) else np.zeros((height, width), bool)
    return mask_to_rle(union)


def iter_batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
