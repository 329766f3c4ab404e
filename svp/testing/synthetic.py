"""Seeded synthetic images and LLaVA conversations for tests, the demo and benchmarks.

Pictures of one coloured shape (circle, square or triangle) on a noisy background, with a
question about it and the true answer, so a tiny model has something learnable and every
run of the demo sees the same data.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from svp.common.io import write_atomic
from svp.croptool.format import FEEDBACK, VISION_BLOCK
from svp.croptool.geometry import CropPolicy
from svp.masktok.codec.scenes import draw_shapes_scene, textured_background

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220),
           "yellow": (230, 210, 40)}


@dataclass(frozen=True)
class ShapeSample:
    """One drawn shape: what it is and where (box in pixels, x1 y1 x2 y2)."""

    shape: str
    colour: str
    box: tuple[int, int, int, int]
    size: tuple[int, int]


def draw_shape_image(rng: random.Random, width: int, height: int,
                     within: tuple[int, int, int, int] | None = None
                     ) -> tuple[Image.Image, ShapeSample]:
    """A textured background with one filled shape covering 20-60% of the shorter side (of
    the ``within`` box, x1 y1 x2 y2, when given: the shape then lies inside it)."""
    img = textured_background(rng, width, height)
    shape = rng.choice(SHAPES)
    colour = rng.choice(sorted(COLOURS))
    ox, oy, rx, ry = within or (0, 0, width, height)
    side = int(min(rx - ox, ry - oy) * rng.uniform(0.2, 0.6))
    x1 = ox + rng.randint(0, rx - ox - side)
    y1 = oy + rng.randint(0, ry - oy - side)
    box = (x1, y1, x1 + side, y1 + side)
    draw = ImageDraw.Draw(img)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x1 + side // 2, y1), (x1, y1 + side), (x1 + side, y1 + side)], fill=fill)
    return img, ShapeSample(shape, colour, box, (width, height))


def write_llava_dataset(out_dir: str | Path, n: int = 24, seed: int = 0,
                        name: str = "shapes", jsonl: bool = True) -> Path:
    """Write ``n`` images and a LLaVA annotation file; returns the annotation path.

    Images go to ``out_dir/images`` and are referenced by relative path, so the registry's
    ``data_path`` (``out_dir/images``) is exercised.
    """
    rng = random.Random(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        w, h = rng.choice([(84, 84), (112, 84), (84, 112), (140, 112)])
        img, s = draw_shape_image(rng, w, h)
        fname = f"{name}_{i:04d}.png"
        img.save(out / "images" / fname)
        question = rng.choice([
            "What shape is in this picture?", "Which shape do you see?",
            "Name the shape and its colour."])
        rows.append({
            "id": f"{name}-{i}",
            "image": fname,
            "conversations": [
                {"from": "human", "value": f"<image>\n{question}"},
                {"from": "gpt", "value": f"A {s.colour} {s.shape}."},
            ],
        })
    ann = out / (f"{name}.jsonl" if jsonl else f"{name}.json")
    write_atomic(ann, "".join(json.dumps(r) + "\n" for r in rows) if jsonl
                 else json.dumps(rows, indent=1))
    return ann


def write_messages_dataset(out_dir: str | Path, n: int, width: int = 112, height: int = 84,
                           seed: int = 0, text_only: tuple[int, ...] = ()) -> Path:
    """``n`` shape pictures and ``out_dir/train.jsonl`` in ms-swift's ``messages`` form with
    absolute image paths ("What shape is this?" -> "A <colour> <shape>."); the rows whose
    index is in ``text_only`` are an arithmetic question without an image instead."""
    rng = random.Random(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        if i in text_only:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            rows.append({"messages": [{"role": "user", "content": f"What is {a}+{b}?"},
                                      {"role": "assistant", "content": str(a + b)}]})
            continue
        img, s = draw_shape_image(rng, width, height)
        path = (out / "images" / f"{i}.png").resolve()
        img.save(path)
        rows.append({"messages": [{"role": "user", "content": "<image>\nWhat shape is this?"},
                                  {"role": "assistant", "content": f"A {s.colour} {s.shape}."}],
                     "images": [str(path)]})
    ann = out / "train.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ann


def write_mask_token_dataset(out_dir: str | Path, n: int = 16, seed: int = 0) -> Path:
    """Shape pictures whose answers end with one mask-token group (random codes), as LLaVA
    rows, plus ``out_dir/datasets.yaml`` naming them ``masks``: the data of the mask-token
    SFT recipe in its smallest form. Returns the registry file."""
    from svp.masktok.tokens import codes_to_text

    out = Path(out_dir)
    ann = write_llava_dataset(out, n=n, seed=seed, name="shapes")
    rng = random.Random(seed)
    rows = [json.loads(line) for line in ann.read_text().splitlines()]
    for r in rows:
        r["conversations"][1]["value"] += " Mask: " + codes_to_text(rng.randrange(256),
                                                                     rng.randrange(256))
    write_atomic(out / "masks.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return write_registry(out / "datasets.yaml", {"masks": (out / "masks.jsonl",
                                                            out / "images")})


def write_crop_questions(out_dir: str | Path, n: int, seed: int = 0, width: int = 224,
                         height: int = 168) -> dict[str, Path]:
    """Crop-tool questions about one small shape per picture, in the *upstream* formats, so
    the demo runs the real converters on them.

    The shape lies inside one quarter of the picture and the reasoning crops that quarter,
    a task a tiny model can learn on CPU in a minute (four distinct boxes). Writes
    ``images/crop_*.png``, ``vlir.jsonl`` (VLM-R3's SFT format: ``QnA`` with an ``A3`` whose
    reasoning asks for ``{Crop shape [x1, y1, x2, y2]}`` in original pixels) and
    ``rl.jsonl`` (VLM-R3's RL format: question, answer = the colour, ``bbox`` = the shape's
    own box) for the same pictures. Returns the paths.
    """
    rng = random.Random(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sft, rl = [], []
    hw, hh = width // 2, height // 2
    quarters = [(0, 0, hw, hh), (hw, 0, width, hh), (0, hh, hw, height), (hw, hh, width, height)]
    for i in range(n):
        quarter = rng.choice(quarters)
        img, s = draw_shape_image(rng, width, height, within=quarter)
        fname = f"crop_{i:04d}.png"
        img.save(out / "images" / fname)
        question = "What colour is the shape?"
        answer = (f"<think>\nThe {s.shape} is small; look closer. "
                  f"{{Crop {s.shape} [{', '.join(str(v) for v in quarter)}]}}\n"
                  f"It is {s.colour}.\n</think>\n\n<answer>{s.colour}</answer>")
        sft.append({"image_path": fname, "QnA": [{"Q": question, "A3": answer}]})
        rl.append({"image_path": fname, "question": question, "answer": s.colour,
                   "bbox": list(s.box), "source": "synthetic"})

    paths = {"images": out / "images", "vlir": out / "vlir.jsonl", "rl": out / "rl.jsonl"}
    for key, rows in (("vlir", sft), ("rl", rl)):
        write_atomic(paths[key], "".join(json.dumps(r) + "\n" for r in rows))
    return paths


def write_registry(path: str | Path, datasets: dict[str, tuple[str | Path, str | Path | None]]
                   ) -> Path:
    """Write a registry YAML mapping names to (annotation_path, data_path)."""
    import yaml

    doc = {"datasets": {
        name: {"annotation_path": str(ann), **({"data_path": str(data)} if data else {})}
        for name, (ann, data) in datasets.items()}}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return p


def write_synthetic_gres(out_dir: str | Path, n_images: int = 12, seed: int = 0,
                         val_fraction: float = 0.25) -> dict[str, Path]:
    """A gRefCOCO-format dataset drawn from synthetic scenes, for tests and the demo.

    Writes ``images/*.png``, ``instances.json`` (unoccluded rectangles as polygons,
    two-part blobs as uncompressed RLE, the rest as compressed RLE) and
    ``grefs(unc).json`` with single-target, multi-target ("all the shapes") and
    no-target ("the purple unicorn") expressions, split into train / val by image.
    """
    import numpy as np

    from svp.masktok.coco import mask_to_rle

    rng = random.Random(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns, refs = [], [], []
    ann_id, ref_id = 1, 0
    for i in range(n_images):
        w, h = rng.choice([(128, 96), (160, 120), (96, 128), (128, 128)])
        img, masks, kinds = draw_shapes_scene(rng, w, h, rng.randint(2, 4), min_visible=60)
        if len(masks) == 0:
            continue
        image_id = 1000 + i
        fname = f"scene_{i:04d}.png"
        img.save(out / "images" / fname)
        images.append({"id": image_id, "file_name": fname, "width": w, "height": h})
        every = max(1, round(1 / val_fraction))  # deterministic: every k-th image is val
        split = "val" if i % every == every - 1 else "train"
        ids = []
        for m, kind in zip(masks, kinds, strict=True):
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            if m.sum() == (x1 - x0) * (y1 - y0):  # an unoccluded rectangle: a polygon
                seg = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1),
                        float(x0), float(y1)]]
            elif kind == "two_part":  # uncompressed RLE (list counts), as iscrowd ones are
                seg = _uncompressed_rle(m)
            else:
                seg = mask_to_rle(m)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "area": float(m.sum()), "segmentation": seg,
                         "bbox": [float(xs.min()), float(ys.min()),
                                  float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
                         "kind": kind})
            ids.append(ann_id)
            ann_id += 1
        for k, a in enumerate(ids):
            kind = anns[a - 1]["kind"].replace("_", "-")
            refs.append(_gref(ref_id, image_id, fname, split, [a],
                              [f"the {kind} number {k + 1}", f"shape {k + 1}, a {kind}"]))
            ref_id += 1
        if len(ids) > 1:
            refs.append(_gref(ref_id, image_id, fname, split, ids, ["all the shapes"]))
            ref_id += 1
        refs.append(_gref(ref_id, image_id, fname, split, [-1], ["the purple unicorn"]))
        ref_id += 1
    inst = out / "instances.json"
    inst.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "shape"}]}))
    grefs = out / "grefs(unc).json"
    grefs.write_text(json.dumps(refs))
    return {"grefs": grefs, "instances": inst, "images": out / "images"}


def _uncompressed_rle(mask) -> dict:
    """COCO's uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    import numpy as np

    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [len(flat)]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def _gref(ref_id: int, image_id: int, fname: str, split: str, ann_ids: list[int],
          sents: list[str]) -> dict:
    return {"ref_id": ref_id, "image_id": image_id, "file_name": fname, "split": split,
            "ann_id": ann_ids, "no_target": ann_ids == [-1],
            "sentences": [{"sent_id": ref_id * 10 + j, "sent": s, "raw": s}
                          for j, s in enumerate(sents)]}


_WORDS = ("the sign above the door shows a small red symbol next to the window while the "
         "person on the left holds a blue umbrella near the counter").split()


def rollout_reward_batch(n: int, seed: int = 0) -> tuple[list[str], dict]:
    """``n`` crop-tool rollouts as GRPO hands them to the reward functions: completions and
    the batched columns. Reasoning of 200-1500 characters with 0-4 crop calls, executed
    (vision block in the text) or rejected (failure note, swapped corners), recorded in
    ``rollout_infos`` as the scheduler does; answers that are option letters, counts,
    decimals or free text (a fifth wrong, some unclosed); ground-truth boxes on half."""
    rng = random.Random(seed)
    policy = CropPolicy("qwen2_5_vl")
    comps, infos, sols, gts, msgs = [], [], [], [], []
    for i in range(n):
        w, h = rng.randint(500, 2000), rng.randint(400, 1500)
        mw, mh = policy.main_size(w, h)
        kind = rng.choice(["letter", "count", "decimal", "text"])
        gold = {"letter": rng.choice("ABCD"), "count": str(rng.randint(0, 40)),
                "decimal": f"{rng.uniform(0, 100):.2f}",
                "text": " ".join(rng.sample(_WORDS, 2))}[kind]
        answer = gold if rng.random() < 0.8 else "something else"
        parts, calls, executed = ["<think>"], [], 0
        for _ in range(rng.randint(0, 4)):
            parts.append(" ".join(rng.choices(_WORDS, k=rng.randint(8, 60))) + " ")
            x1, y1 = rng.uniform(0, mw * 0.7), rng.uniform(0, mh * 0.7)
            box = [round(x1), round(y1), round(x1 + rng.uniform(5, mw * 0.4)),
                   round(y1 + rng.uniform(5, mh * 0.4))]
            ok = rng.random() < 0.85
            if not ok:
                box = [box[2], box[1], box[0], box[3]]
            parts.append("<tool_call>[" + ", ".join(map(str, box)) + "]</tool_call>")
            parts.append(VISION_BLOCK if ok else FEEDBACK.format(reason="swapped corners"))
            calls.append({"box": [float(v) for v in box], "error": None if ok else "swapped"})
            executed += ok
        parts.append(" ".join(rng.choices(_WORDS, k=rng.randint(8, 60))))
        tail = f"</think>\n<answer>{answer}</answer>" if rng.random() < 0.95 else "</think>"
        comps.append("".join(parts) + tail)
        infos.append({"crop_tool": {"calls": calls, "executed": executed, "image_wh": [w, h],
                                    "model_wh": [mw, mh], "space": "resized", "factor": 28},
                      "num_turns": len(calls) + 1})
        sols.append(gold)
        gts.append([[w * 0.1, h * 0.1, w * 0.5, h * 0.6]] if i % 2 else None)
        msgs.append([{"role": "user", "content": "<image>What does the sign show?"}])
    return comps, dict(rollout_infos=infos, solution=sols, gt_boxes=gts, messages=msgs,
                       trainer_state=None)
