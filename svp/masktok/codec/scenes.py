"""Synthetic scenes the builtin mask codec pre-trains on (and the demo draws its GRES data
from): several shapes, partly occluding each other, on a textured background, with the
visible mask of each. Seeded by the caller's ``random.Random``, so a run is reproducible.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw


def _noise(rng: random.Random, width: int, height: int, sigma: float) -> Image.Image:
    """Grey Gaussian noise around 128, drawn from ``rng`` (PIL's effect_noise is unseeded)."""
    import numpy as np

    gen = np.random.default_rng(rng.getrandbits(64))
    grey = np.clip(gen.normal(128.0, sigma, (height, width)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def textured_background(rng: random.Random, width: int, height: int) -> Image.Image:
    """Noise blended with a random tint, a gradient and a few lines: not trivially flat."""
    noise = _noise(rng, width, height, rng.uniform(15, 70))
    tint = Image.new("RGB", (width, height), tuple(rng.randint(30, 225) for _ in range(3)))
    img = Image.blend(noise, tint, rng.uniform(0.4, 0.8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, 6)):
        pts = [(rng.randint(0, width), rng.randint(0, height)) for _ in range(2)]
        draw.line(pts, fill=tuple(rng.randint(0, 255) for _ in range(3)),
                  width=rng.randint(1, 3))
    return img


def _random_polygon(rng: random.Random, cx: float, cy: float, r: float) -> list[tuple]:
    n = rng.randint(3, 8)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
    return [(cx + r * rng.uniform(0.5, 1.0) * math.cos(a),
             cy + r * rng.uniform(0.5, 1.0) * math.sin(a)) for a in angles]


def draw_shapes_scene(rng: random.Random, width: int, height: int, n_shapes: int,
                      min_visible: int = 30):
    """Several shapes (ellipses, rectangles, polygons, two-part blobs) on a textured
    background, later ones occluding earlier ones.

    Returns ``(image, masks [K, H, W] bool, kinds)`` with the *visible* part of each shape;
    shapes left with fewer than ``min_visible`` pixels are dropped.
    """
    import numpy as np

    img = textured_background(rng, width, height)
    draw = ImageDraw.Draw(img)
    masks, kinds = [], []
    short = min(width, height)
    for _ in range(n_shapes):
        kind = rng.choice(("ellipse", "rectangle", "polygon", "two_part"))
        layer = Image.new("L", (width, height), 0)
        ldraw = ImageDraw.Draw(layer)
        r = short * rng.uniform(0.08, 0.35)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if kind == "ellipse":
            rx, ry = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.5, 1.0)
            ldraw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        elif kind == "rectangle":
            rx, ry = r * rng.uniform(0.4, 1.0), r * rng.uniform(0.4, 1.0)
            ldraw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        elif kind == "polygon":
            ldraw.polygon(_random_polygon(rng, cx, cy, r), fill=255)
        else:
            for _ in range(2):
                ox, oy = rng.uniform(-1.5, 1.5) * r, rng.uniform(-1.5, 1.5) * r
                rr = r * rng.uniform(0.3, 0.6)
                ldraw.ellipse((cx + ox - rr, cy + oy - rr, cx + ox + rr, cy + oy + rr), fill=255)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        fill = Image.new("RGB", (width, height), colour)
        if rng.random() < 0.5:  # a textured fill
            fill = Image.blend(fill, _noise(rng, width, height, 40), 0.25)
        img.paste(fill, (0, 0), layer)
        new = np.asarray(layer) > 127
        masks = [m & ~new for m in masks]
        masks.append(new)
        kinds.append(kind)
    keep = [i for i, m in enumerate(masks) if m.sum() >= min_visible]
    del draw
    out = np.stack([masks[i] for i in keep]) if keep else np.zeros((0, height, width), bool)
    return img, out, [kinds[i] for i in keep]
