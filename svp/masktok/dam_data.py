"""SAMTok's DAM (describe-anything) construction as pure functions: which regions are asked
about globally and which get a zoomed-in second view, the zoom window and its size, the
mask inside the window, and the question texts.

The arithmetic is that of SAMTok's ``tokenize_2d_mask/tokenize_dam.py`` (facts measured from
its code, including its quirks, so the rows are the release's):

- the box is ``torchvision.ops.masks_to_boxes`` of the mask (x2/y2 the last pixel's index),
  its area ``(x2 - x1) * (y2 - y1)``; a region whose box covers more than 0.2 of the image is
  asked about on the full image only;
- otherwise the box is widened (and heightened) to 140 px when narrower, by
  ``(140 - w) // 2`` on each side, then cut at the image edge with ``int()``;
- the crop is upscaled (LANCZOS) so that its short side is 280 only when its *long* side is
  under 280 too and it is not square (``w > h and w < 280`` or ``h > w and h < 280``); the new
  long side is ``int(long * 280 / short)``;
- the mask is cut by the same window and, when the crop was resized, resized bilinearly
  and thresholded at 0.5: it is encoded again *inside the crop*, as a second token string.
"""

from __future__ import annotations

import numpy as np

GLOBAL_SHARE = 0.2   # box area / image area above which no zoomed view is added
MIN_SIDE = 140       # the zoom window's minimum width and height (pixels)
SHORT_SIDE = 280     # a small crop's short side after upscaling

# SAMTok's question templates ({SEG}: the region's tokens on the full image; {ZOOM_IN_SEG}:
# its tokens in the crop, which is the second <image>, inline)
ZOOM_QUESTIONS = (
    "Given a detailed description of this region {SEG}. Zoom in with the perspective as "
    "<image>, {ZOOM_IN_SEG}.",
    "Provide a thorough description of this region {SEG}. Zoom in with the perspective as "
    "<image>, {ZOOM_IN_SEG}.",
    "Describe the region {SEG} in detail. Zoom in with the perspective as <image>, "
    "{ZOOM_IN_SEG}.",
    "Provide detailed information about this region {SEG}. Zoom in with the perspective as "
    "<image>, {ZOOM_IN_SEG}.",
    "Provide a detailed caption of this region {SEG}. Zoom in with the perspective as "
    "<image>, {ZOOM_IN_SEG}.",
    "{SEG}\nGive a detailed description of the masked region. Zoom in with the perspective "
    "as <image>, {ZOOM_IN_SEG}.",
    "{SEG}\nProvide a detailed description of the masked region. Zoom in with the "
    "perspective as <image>, {ZOOM_IN_SEG}.",
    "{SEG}\nDescribe the masked area comprehensively. Zoom in with the perspective as "
    "<image>, {ZOOM_IN_SEG}.",
    "{SEG}\nWhat are the details of the masked area? Zoom in with the perspective as "
    "<image>, {ZOOM_IN_SEG}.",
)
# the same questions without the zoomed view, for regions asked about on the full image
GLOBAL_QUESTIONS = tuple(q.split(" Zoom in with")[0] for q in ZOOM_QUESTIONS)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """``torchvision.ops.masks_to_boxes`` of one non-empty mask: (x1, y1, x2, y2), x2/y2 the
    index of the last pixel."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if not len(xs):
        raise ValueError("an empty mask has no box")
    return float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1])


def box_share(box, width: int, height: int) -> float:
    x1, y1, x2, y2 = box
    return (x2 - x1) * (y2 - y1) / (width * height)


def takes_zoom(box, width: int, height: int) -> bool:
    """Whether the region gets a zoomed-in second view (its box covers <= 0.2 of the image)."""
    return not box_share(box, width, height) > GLOBAL_SHARE


def zoom_window(box, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop (x1, y1, x2, y2) of a zoomed region, as SAMTok computes it."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w < MIN_SIDE:
        x1, x2 = x1 - (MIN_SIDE - w) // 2, x2 + (MIN_SIDE - w) // 2
    if h < MIN_SIDE:
        y1, y2 = y1 - (MIN_SIDE - h) // 2, y2 + (MIN_SIDE - h) // 2
    return int(max(0, x1)), int(max(0, y1)), int(min(width, x2)), int(min(height, y2))


def zoom_size(crop_w: int, crop_h: int) -> tuple[int, int] | None:
    """The upscaled (w, h) of a crop, or None when SAMTok keeps it as cut."""
    if crop_w > crop_h and crop_w < SHORT_SIDE:
        return int(crop_w * (SHORT_SIDE / crop_h)), SHORT_SIDE
    if crop_h > crop_w and crop_h < SHORT_SIDE:
        return SHORT_SIDE, int(crop_h * (SHORT_SIDE / crop_w))
    return None


def crop_mask(mask: np.ndarray, window, size: tuple[int, int] | None) -> np.ndarray:
    """The region's mask in the crop: cut by ``window``, resized bilinearly to ``size``
    (w, h) and thresholded at 0.5 when the crop was resized. As SAMTok's DAM tokenizer, the
    0/1 mask is interpolated as uint8: torch rounds each value to an integer before the
    threshold, so a pixel at exactly 0.5 is in the mask (a float interpolation drops it)."""
    import torch
    import torch.nn.functional as F

    x1, y1, x2, y2 = window
    cut = np.ascontiguousarray(mask[y1:y2, x1:x2])
    if size is None:
        return cut.astype(bool)
    t = torch.from_numpy(cut.astype(np.uint8))[None, None]
    return (F.interpolate(t, size=(size[1], size[0]), mode="bilinear")[0, 0] > 0.5).numpy()
