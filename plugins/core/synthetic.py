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


def draw_shape_image(rng: random.Random, width: int, height: int) -> tuple[Image.Image,
                                                                            ShapeSample]:
    """A textured background with one filled shape covering 20-60% of the shorter side."""
    bg = Image.effect_noise((width, height), rng.uniform(20, 60)).convert("RGB")
    tint = Image.new("RGB", (width, height), tuple(rng.randint(60, 200) for _ in range(3)))
    img = Image.blend(bg, tint, 0.6)
    shape = rng.choice(SHAPES)
    colour = rng.choice(sorted(COLOURS))
    side = int(min(width, height) * rng.uniform(0.2, 0.6))
    x1 = rng.randint(0, width - side)
    y1 = rng.randint(0, height - side)
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
    tmp = ann.with_suffix(ann.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        if jsonl:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        else:
            json.dump(rows, f, indent=1)
    tmp.replace(ann)
    return ann


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
