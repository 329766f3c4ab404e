"""What a skill found, as JSON: the one extra field (``svp``) of each choice.

The message content stays what the model wrote, so stock OpenAI clients keep working; a
client that knows the field reads the skill's results from ``choices[i].svp``:

- crop tool: ``{"skill": "crop", "calls": [{"box_model", "box_pixels"}], "invalid_calls":
  [{"text", "reason"}], "crops": [{"width", "height", "image": data URL (PNG)}], "rounds",
  "finished", "answer"}``; ``box_model`` is in the model's coordinate space (Qwen2.5-VL:
  pixels of the resized main image; Qwen3-VL: 0..1000), ``box_pixels`` in the pixels of the
  picture that was sent.
- mask tokens: ``{"skill": "masks", "masks": [{"label", "codes", "rle": {"size", "counts"},
  "box": [x1, y1, x2, y2], "polygon": [[x, y, ...], ...], "area"}], "no_target"}`` at the
  size of the picture that was sent (COCO conventions: compressed RLE, inclusive pixel box
  as ``torchvision.ops.masks_to_boxes`` gives it, one flat polygon per outline).
- CoVT (``--skill covt``), when the request asks ``{"svp": {"maps": true}}``: ``{"skill":
  "covt", "maps": [{"expert", "image": data URL (PNG: picture | decoded from the tokens |
  the expert itself), "loss", "zero_token_loss"}], "missing": [experts without a complete
  token group in the answer]}``; the losses say how much of a map the tokens carry (a zero
  token still decodes a map from the expert's own features).
- everything else: ``{"skill": name}``.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

FIELD = "svp"


def data_url(image: Image.Image) -> str:
    """A picture as a PNG data URL (lossless, so a client sees the crop the model saw)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def crop_field(result) -> dict:
    """:class:`svp.croptool.swift_inference.CropResult` -> the ``svp`` field."""
    return {"skill": "crop", "calls": list(result.tool_calls),
            "invalid_calls": list(result.invalid_calls),
            "crops": [{"width": c.width, "height": c.height, "image": data_url(c)}
                      for c in result.crops],
            "rounds": result.rounds, "finished": result.finished, "answer": result.answer}


def polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outlines of a bool mask as COCO polygons (flat ``[x, y, ...]``, pixel corners), from
    contourpy's marching squares at 0.5 on the zero-padded mask (closed rings)."""
    import contourpy

    m = np.pad(np.asarray(mask, np.float64), 1)
    if not m.any():
        return []
    lines = contourpy.contour_generator(z=m, line_type="Separate").lines(0.5)
    out = []
    for line in lines:
        if len(line) < min_points:
            continue
        pts = np.asarray(line, np.float64) - 1.0 + 0.5  # unpad; pixel centres to corners
        out.append([round(float(v), 2) for v in pts.reshape(-1)])
    return out


def mask_entry(mask: np.ndarray, codes, label: str | None) -> dict:
    """One decoded mask: RLE, inclusive box, polygons, area, and what the model wrote."""
    from svp.masktok.coco import mask_to_rle

    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if len(xs) else None
    return {"label": label, "codes": [int(c) for c in codes], "rle": mask_to_rle(mask),
            "box": box, "polygon": polygons(mask), "area": int(mask.sum())}


def masks_field(items, masks: np.ndarray) -> dict:
    """Parsed answer items (:class:`svp.masktok.tokens.MaskAnswerItem`) and their decoded
    masks [N, H, W] -> the ``svp`` field; no item means the model answered no target."""
    return {"skill": "masks", "no_target": len(items) == 0,
            "masks": [mask_entry(m, it.codes, it.label)
                      for it, m in zip(items, masks, strict=True)]}


def covt_field(results: dict[str, dict], missing: list[str], image: Image.Image) -> dict:
    """:func:`svp.covt.swift_plugin.decode_answer`'s results -> the ``svp`` field."""
    from svp.covt.decode import render

    return {"skill": "covt", "maps": [
        {"expert": name, "image": data_url(render(name, res, image)), "loss": res["loss"],
         "zero_token_loss": res["zero_loss"]} for name, res in results.items()],
        "missing": list(missing)}
