"""Pictures people look at: mask overlays (ground truth vs prediction)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image border counts as outside)."""
    m = np.pad(np.asarray(mask, bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return m[1:-1, 1:-1] & ~inner


def mask_overlay(image: Image.Image, truth: np.ndarray | None, pred: np.ndarray | None,
                 title: str | None = None, alpha: float = 0.45,
                 min_width: int = 256) -> Image.Image:
    """Three panels: both (truth green, prediction red, overlap yellow) | truth | prediction.

    Each mask is also outlined in its pure colour, so it stays visible on coloured objects.
    Small images are enlarged (nearest neighbour, whole factors) to ``min_width`` per panel
    so that a person can see the masks.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = base.shape[:2]
    t = np.zeros((h, w), bool) if truth is None else np.asarray(truth, bool)
    p = np.zeros((h, w), bool) if pred is None else np.asarray(pred, bool)
    green, red = np.array((0, 255, 0), np.float32), np.array((255, 0, 0), np.float32)
    panels = []
    for m, colour in ((t, green), (p, red)):
        panel = base.copy()
        panel[m] = (1 - alpha) * panel[m] + alpha * colour
        panel[_boundary(m)] = colour
        panels.append(panel)
    both = base.copy()
    for m, colour in ((t & ~p, green), (p & ~t, red), (t & p, (255, 255, 0))):
        both[m] = (1 - alpha) * both[m] + alpha * np.array(colour, np.float32)
    both[_boundary(t)] = green
    both[_boundary(p)] = red
    strip = np.concatenate([both, *panels], axis=1).clip(0, 255).astype(np.uint8)
    out = Image.fromarray(strip)
    factor = max(1, -(-min_width // w))
    if factor > 1:
        out = out.resize((out.width * factor, out.height * factor), Image.NEAREST)
    if title:
        ImageDraw.Draw(out).text((4, 2), title, fill=(255, 255, 255))
    return out


# Colours of successive crop boxes (and the borders of their crops), distinct on photos.
BOX_COLOURS = [(255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 210, 120), (220, 80, 255),
               (255, 128, 0), (0, 220, 220), (255, 255, 255)]


def _font(size: int = 13):
    """PIL's built-in scalable font (no font file on disk is needed)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _to_height(img: Image.Image, height: int) -> Image.Image:
    w = max(1, round(img.width * height / img.height))
    return img.convert("RGB").resize((w, height), Image.BICUBIC)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    lines = []
    for para in text.splitlines() or [""]:
        lines += textwrap.wrap(para, width) or [""]
    return lines


def crop_chain(image: Image.Image, boxes: list[tuple[float, float, float, float]],
               crops: list[Image.Image], text: str = "", notes: list[str] | None = None,
               truth: list[tuple[float, float, float, float]] | None = None,
               height: int = 224) -> Image.Image:
    """One crop-tool answer as a strip: the picture with each requested box drawn and
    numbered (original pixels; ``truth`` boxes thin green), then the crops in the order they
    were fed back, each framed in its box's colour, and under them the model's text and any
    notes (invalid calls)."""
    font = _font(13)
    main = _to_height(image, height)
    scale = height / image.height
    draw = ImageDraw.Draw(main)
    for box in truth or []:
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=(0, 255, 0), width=1)
    for k, box in enumerate(boxes):
        colour = BOX_COLOURS[k % len(BOX_COLOURS)]
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=3)
        draw.text((x1 + 4, y1 + 2), str(k + 1), fill=colour, font=font)
    panels = [main]
    for k, crop in enumerate(crops):
        framed = _to_height(crop, height - 8)
        border = Image.new("RGB", (framed.width + 8, height), BOX_COLOURS[k % len(BOX_COLOURS)])
        border.paste(framed, (4, 4))
        panels.append(border)
    gap, arrow_w = 8, 28
    width = sum(p.width for p in panels) + (len(panels) - 1) * (arrow_w + gap)
    lines = _wrap(text, max(40, width // 7))[:12] + [f"! {n}" for n in notes or []]
    caption_h = 16 * (len(lines) + 1) + 24
    out = Image.new("RGB", (max(width, 320), height + caption_h), (255, 255, 255))
    d = ImageDraw.Draw(out)
    x = 0
    for k, p in enumerate(panels):
        if k:
            d.text((x + 4, height // 2 - 8), "->", fill=(0, 0, 0), font=_font(16))
            x += arrow_w + gap
        out.paste(p, (x, 0))
        label = ("image + boxes" + (" (green: truth)" if truth else "")) if k == 0 \
            else f"crop {k}"
        if 0 < k <= len(boxes):
            label += ": [" + ", ".join(f"{v:.0f}" for v in boxes[k - 1]) + "]"
        d.text((x + 2, height + 4), label, fill=(0, 0, 0), font=font)
        x += p.width
    y = height + 24
    for line in lines:
        d.text((4, y), line, fill=(160, 0, 0) if line.startswith("! ") else (20, 20, 20),
               font=font)
        y += 16
    return out


def contact_sheet(tiles: list[Image.Image], captions: list[str] | None = None, cols: int = 2,
                  max_width: int = 1400, pad: int = 8) -> Image.Image:
    """Tiles in a grid (row-major) with a caption above each, shrunk so a row fits in
    ``max_width``: one PNG a report can show instead of a folder of files."""
    if not tiles:
        raise ValueError("contact_sheet: no tiles")
    captions = captions or [""] * len(tiles)
    cols = max(1, min(cols, len(tiles)))
    cell_w = min(max(t.width for t in tiles), (max_width - pad * (cols + 1)) // cols)
    shrunk = [t.convert("RGB").resize((cell_w, max(1, round(t.height * cell_w / t.width))),
                                      Image.BICUBIC) if t.width != cell_w else t.convert("RGB")
              for t in tiles]
    cap_h = 18 if any(captions) else 0
    rows = [shrunk[i:i + cols] for i in range(0, len(shrunk), cols)]
    row_h = [max(t.height for t in r) + cap_h for r in rows]
    out = Image.new("RGB", (pad + cols * (cell_w + pad), pad + sum(h + pad for h in row_h)),
                    (255, 255, 255))
    d = ImageDraw.Draw(out)
    font = _font(13)
    y = pad
    for r, (row, h) in enumerate(zip(rows, row_h, strict=True)):
        for c, tile in enumerate(row):
            x = pad + c * (cell_w + pad)
            d.text((x, y + 2), captions[r * cols + c][:90], fill=(0, 0, 0), font=font)
            out.paste(tile, (x, y + cap_h))
        y += h + pad
    return out
