"""Pictures people look at: mask overlays (ground truth vs prediction)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def mask_overlay(image: Image.Image, truth: np.ndarray | None, pred: np.ndarray | None,
                 title: str | None = None, alpha: float = 0.45,
                 min_width: int = 256) -> Image.Image:
    """Three panels: both (truth green, prediction red, overlap yellow) | truth | prediction.

    Small images are enlarged (nearest neighbour, whole factors) to ``min_width`` per panel
    so that a person can see the masks.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = base.shape[:2]
    panels = [base]
    for mask, colour in ((truth, (0, 255, 0)), (pred, (255, 0, 0))):
        panel = base.copy()
        if mask is not None and np.asarray(mask).any():
            m = np.asarray(mask, dtype=bool)
            panel[m] = (1 - alpha) * panel[m] + alpha * np.array(colour, np.float32)
        panels.append(panel)
    both = base.copy()
    t = np.zeros((h, w), bool) if truth is None else np.asarray(truth, bool)
    p = np.zeros((h, w), bool) if pred is None else np.asarray(pred, bool)
    for m, colour in ((t & ~p, (0, 255, 0)), (p & ~t, (255, 0, 0)), (t & p, (255, 255, 0))):
        both[m] = (1 - alpha) * both[m] + alpha * np.array(colour, np.float32)
    panels[0] = both
    strip = np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8)
    out = Image.fromarray(strip)
    factor = max(1, -(-min_width // w))
    if factor > 1:
        out = out.resize((out.width * factor, out.height * factor), Image.NEAREST)
    if title:
        ImageDraw.Draw(out).text((4, 2), title, fill=(255, 255, 255))
    return out
