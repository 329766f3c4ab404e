"""Small benchmark copies built from synthetic pictures, each in the benchmark's own columns
and file layout (as its release or EvalScope's adapter reads it), so the real readers run."""

from __future__ import annotations

import base64
import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [("red", (220, 30, 30)), ("blue", (30, 60, 220)), ("green", (30, 180, 60)),
           ("yellow", (230, 210, 40))]


def picture(seed: int, size=(320, 240)) -> tuple[Image.Image, str]:
    """A grey picture with one coloured box; returns it and the box's colour name."""
    rng = np.random.default_rng(seed)
    name, rgb = COLOURS[seed % len(COLOURS)]
    im = Image.new("RGB", size, (200, 200, 200))
    x, y = int(rng.integers(10, size[0] // 2)), int(rng.integers(10, size[1] // 2))
    ImageDraw.Draw(im).rectangle([x, y, x + size[0] // 3, y + size[1] // 3], fill=rgb)
    return im, name


def _bytes(im: Image.Image, fmt: str = "JPEG") -> bytes:
    b = io.BytesIO()
    im.save(b, fmt)
    return b.getvalue()


def _options(answer: str) -> list[str]:
    names = [n for n, _ in COLOURS]
    return [answer] + [n for n in names if n != answer][:3]


def _parquet(rows: list[dict], path: Path, image_cols: tuple[str, ...]) -> Path:
    import datasets

    ds = datasets.Dataset.from_list(rows)
    for col in image_cols:
        ds = ds.cast_column(col, datasets.Image())
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def vstar(root: Path, n: int = 4) -> Path:
    """lmms-lab/vstar-bench: data/test-*.parquet with text, image, label, category, id."""
    rows = []
    for i in range(n):
        im, colour = picture(i)
        opts = _options(colour)
        text = "What is the colour of the box?\n" + "\n".join(
            f"({c}) {o}" for c, o in zip("ABCD", opts, strict=True))
        rows.append({"text": text, "image": {"bytes": _bytes(im), "path": None},
                     "label": "A", "category": ("direct_attributes", "relative_position")[i % 2],
                     "question_id": f"sa_{i}"})
    _parquet(rows, root / "data" / "test-00000-of-00001.parquet", ("image",))
    return root


def math_vista(root: Path, n: int = 4) -> Path:
    """AI4Math/MathVista testmini: one multi-choice and one free-form kind of row."""
    rows = []
    for i in range(n):
        im, colour = picture(10 + i)
        mc = i % 2 == 0
        rows.append({"pid": str(i + 1), "question": "What colour is the box?" if mc else
                     "How many boxes are there?", "image": f"images/{i + 1}.jpg",
                     "decoded_image": {"bytes": _bytes(im), "path": None},
                     "choices": _options(colour) if mc else None,
                     "unit": None, "precision": None if mc else 0.0,
                     "answer": colour if mc else "1",
                     "question_type": "multi_choice" if mc else "free_form",
                     "answer_type": "text" if mc else "integer",
                     "pid_metadata": None,
                     "metadata": {"category": "general-vqa", "context": "synthetic scene",
                                  "grade": "elementary school", "img_height": 240,
                                  "img_width": 320, "language": "english",
                                  "skills": ["numeric commonsense"], "source": "svp-fixture",
                                  "split": "testmini", "task": "figure question answering"},
                     "query": ""})
    for r in rows:
        r.pop("pid_metadata")
    _parquet(rows, root / "data" / "testmini-00000-of-00001.parquet", ("decoded_image",))
    return root


def science_qa(root: Path, n: int = 4) -> Path:
    """derek-thomas/ScienceQA test: data/test-*.parquet (answer as the choice's index)."""
    rows = []
    for i in range(n):
        im, colour = picture(50 + i)
        opts = _options(colour)[: 2 + i % 3]
        rows.append({"image": {"bytes": _bytes(im, "PNG"), "path": None},
                     "question": "Which colour is the box?", "choices": opts, "answer": 0,
                     "hint": "" if i % 2 else "The box is painted.", "task": "closed choice",
                     "grade": "grade2", "subject": "natural science", "topic": "colour",
                     "category": ("Colours", "Shapes")[i % 2], "skill": "Identify colours",
                     "lecture": "", "solution": ""})
    _parquet(rows, root / "data" / "test-00000-of-00001.parquet", ("image",))
    return root


def hr_bench(path: Path, n: int = 4) -> Path:
    """DreamMr/HR-Bench's TSV (VLMEvalKit MCQ columns, the picture as base64)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["index", "question", "answer", "category", "A", "B", "C", "D",
                    "cycle_category", "image"])
        for i in range(n):
            im, colour = picture(20 + i, (640, 480))
            opts = _options(colour)
            w.writerow([i, "What is the colour of the box?", "A",
                        ("single", "cross")[i % 2], *opts, "0",
                        base64.b64encode(_bytes(im)).decode()])
    return path


def cv_bench(root: Path, n: int = 4) -> Path:
    """nyu-visionx/CV-Bench: test_2d.parquet (idx, type, task, image, question, choices,
    answer '(A)', prompt, filename, source)."""
    rows = []
    for i in range(n):
        im, colour = picture(30 + i)
        rows.append({"idx": i, "type": "2D", "task": ("Count", "Relation")[i % 2],
                     "image": {"bytes": _bytes(im), "path": None},
                     "question": "What colour is the box?", "choices": _options(colour),
                     "answer": "(A)", "prompt": "", "filename": f"img/2D/{i}.png",
                     "source": "svp-fixture"})
    _parquet(rows, root / "test_2d.parquet", ("image",))
    return root


def mmvp(root: Path, n: int = 4) -> Path:
    """MMVP/MMVP: Questions.csv and 'MMVP Images/<Index>.jpg'."""
    (root / "MMVP Images").mkdir(parents=True, exist_ok=True)
    with open(root / "Questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Index", "Question", "Options", "Correct Answer"])
        for i in range(1, n + 1):
            im, colour = picture(40 + i)
            im.save(root / "MMVP Images" / f"{i}.jpg")
            other = next(c for c, _ in COLOURS if c != colour)
            first = i % 2 == 0
            a, b = (colour, other) if first else (other, colour)
            w.writerow([i, "What colour is the box?", f"(a) {a} (b) {b}",
                        "(a)" if first else "(b)"])
    return root


# ------------------------------------------------------------ referring segmentation
def _coco(images: list[dict], anns: list[dict]) -> dict:
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "shape", "supercategory": "shape"}]}


def refer_sets(root: Path, image_root: Path, refs_per_split: int = 2,
               scenes: list | None = None) -> Path:
    """refcoco / refcoco+ / refcocog (refs pickles, protocol 2 as Python 2 wrote them) and
    grefcoco (grefs(unc).json; every other expression refers to nothing), sharing pictures in
    COCO's ``train2014`` naming. Targets are box polygons on :func:`picture`, or with
    ``scenes`` ((image, masks) pairs, e.g. a codec's training scenes) the scenes' masks as
    COCO RLE on their pictures (saved losslessly)."""
    from svp.evaluation.refer import REFER_SETS
    from svp.masktok.coco import mask_to_rle

    image_root.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    layout: dict[str, list[tuple[str, int, list[int]]]] = {}
    img_id = 1
    for name, spec in REFER_SETS.items():
        for split in spec.splits:
            for _ in range(refs_per_split):
                if scenes:
                    im, masks = scenes[img_id % len(scenes)]
                    im = (im if isinstance(im, Image.Image) else Image.fromarray(
                        np.asarray(im))).convert("RGB")
                    segs = [{"size": r["size"], "counts": r["counts"]}
                            for r in (mask_to_rle(np.asarray(m, bool)) for m in masks[:2])]
                    file_name = f"COCO_train2014_{img_id:012d}.png"
                    im.save(image_root / file_name)
                else:
                    im, _ = picture(100 + img_id)
                    segs = [[[x1, y1, x2, y1, x2, y2, x1, y2]]
                            for x1, y1, x2, y2 in ((20, 30, 140, 120), (170, 100, 300, 220))]
                    file_name = f"COCO_train2014_{img_id:012d}.jpg"
                    im.save(image_root / file_name, quality=95)
                images.append({"id": img_id, "file_name": file_name, "width": im.width,
                               "height": im.height})
                ids = []
                for seg in segs:
                    ids.append(len(anns) + 1)
                    anns.append({"id": ids[-1], "image_id": img_id, "category_id": 1,
                                 "iscrowd": 0, "segmentation": seg})
                layout.setdefault(name, []).append((split, img_id, ids))
                img_id += 1
    inst = _coco(images, anns)
    ref_id = sent_id = 0
    for name, refs in layout.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "instances.json").write_text(json.dumps(inst))
        out = []
        for k, (split, image_id, ids) in enumerate(refs):
            sents = []
            for text in ("the left shape", "the top box"):
                sents.append({"tokens": text.split(), "raw": text, "sent_id": sent_id,
                              "sent": text})
                sent_id += 1
            ref = {"image_id": image_id, "split": split, "sentences": sents,
                   "file_name": f"COCO_train2014_{image_id:012d}_{ids[0]}.jpg",
                   "category_id": 1, "ref_id": ref_id, "sent_ids": [s["sent_id"] for s in sents]}
            if name == "grefcoco":
                ref["ann_id"] = [-1] if k % 2 else ids  # every other one refers to nothing
                ref["no_target"] = bool(k % 2)
            else:
                ref["ann_id"] = ids[0]
            out.append(ref)
            ref_id += 1
        if name == "grefcoco":
            (folder / "grefs(unc).json").write_text(json.dumps(out))
        else:
            refs_file = REFER_SETS[name].refs_file
            (folder / refs_file).write_bytes(pickle.dumps(out, protocol=2))
    return root
