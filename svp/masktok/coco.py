"""COCO segmentation helpers: polygons / RLE to masks, and masks to JSON-friendly RLE.

pycocotools trusts its input. A NaN or infinite polygon coordinate (valid in Python's JSON)
or one far outside the picture makes its rasteriser walk an unbounded edge: memory grows
until the kernel kills the process, or it segfaults. A compressed RLE string whose runs do not
add up to the picture decodes to heap garbage (values other than 0/1, no error). So every
segmentation is checked here, in Python, before pycocotools sees it:
:func:`segmentation_problem` says what is wrong (or None), and :func:`annotation_to_mask`
raises :class:`SegmentationError` with that reason instead of handing it on.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

# How far outside the picture a polygon point may lie, in picture sizes. COCO has points a
# little outside the border (rounding); anything further is an error in the file, and the
# rasteriser's work grows with the distance.
POLYGON_MARGIN = 1.0


class SegmentationError(ValueError):
    """A segmentation that cannot be rasterised safely; ``kind`` is a short category for
    counting (``not finite``, ``far outside the image``, ``RLE size``, ``RLE counts``,
    ``not RLE or polygons``), the message says where in it."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def segmentation_problem(segmentation, height: int, width: int) -> SegmentationError | None:
    """What makes ``segmentation`` unusable for a ``height`` x ``width`` picture, or None.

    Polygons: a list of parts, each a flat list of numbers (parts with fewer than three
    points are ignored, as before); every coordinate finite and within one picture size of
    the picture. RLE: ``size`` equal to the picture's, counts non-negative and adding up to
    ``height * width`` (compressed strings are decoded here to check that)."""
    if isinstance(segmentation, list):
        for i, part in enumerate(segmentation, 1):
            if not isinstance(part, list):
                return SegmentationError("not RLE or polygons",
                                         f"polygon {i} is a {type(part).__name__}, not a list")
            if len(part) < 6:
                continue
            if len(part) % 2:
                return SegmentationError("not RLE or polygons",
                                         f"polygon {i} has an odd number of coordinates "
                                         f"({len(part)})")
            for j, v in enumerate(part):
                if isinstance(v, bool) or not isinstance(v, Real):
                    return SegmentationError("not RLE or polygons",
                                             f"polygon {i} coordinate {j + 1} is {v!r}")
                if not math.isfinite(v):
                    return SegmentationError("not finite",
                                             f"polygon {i} coordinate {j + 1} is {v!r}")
                size = width if j % 2 == 0 else height
                if not -POLYGON_MARGIN * size <= v <= (1 + POLYGON_MARGIN) * size:
                    return SegmentationError(
                        "far outside the image", f"polygon {i} point {j // 2 + 1} has "
                        f"{'xy'[j % 2]} = {v:g}, the image is {width}x{height}")
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if (not isinstance(size, list | tuple) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
            return SegmentationError("RLE size", f"size {size!r} is not [height, width]")
        if list(size) != [height, width]:
            return SegmentationError("RLE size", f"RLE of {size[1]}x{size[0]} for a "
                                                 f"{width}x{height} image")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                       for c in counts):
                return SegmentationError("RLE counts", "counts are not non-negative integers")
            runs = counts
        elif isinstance(counts, str | bytes):
            try:
                runs = decode_counts(counts)
            except ValueError as exc:
                return SegmentationError("RLE counts", str(exc))
            if any(c < 0 for c in runs):
                return SegmentationError("RLE counts", "a run of negative length")
        else:
            return SegmentationError("not RLE or polygons",
                                     f"RLE counts of type {type(counts).__name__}")
        total = sum(runs)
        if total != height * width:
            return SegmentationError("RLE counts", f"runs cover {total} pixels, the image "
                                                   f"has {height * width}")
        return None
    kind = "null" if segmentation is None else f"a {type(segmentation).__name__}"
    return SegmentationError("not RLE or polygons", f"segmentation is {kind}")


def decode_counts(counts: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString`` format:
    each value in 5-bit groups offset by 48, 0x20 = more groups follow, 0x10 in the last
    group = negative; from the third value on, a delta against the value two before).
    Raises ValueError on a character outside the alphabet or a truncated value."""
    s = counts.decode("ascii", errors="replace") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("the string ends inside a value")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[p]!r} at {p} is not RLE")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def annotation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """COCO polygons (list of lists, parts merged), uncompressed RLE (list counts) or
    compressed RLE -> bool [H, W]. An empty polygon list gives an empty mask. Raises
    :class:`SegmentationError` (a ValueError) for anything :func:`segmentation_problem`
    refuses."""
    from pycocotools import mask as mask_utils

    problem = segmentation_problem(segmentation, height, width)
    if problem is not None:
        raise problem
    if isinstance(segmentation, list):
        parts = [p for p in segmentation if len(p) >= 6]
        if not parts:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> compressed RLE with string counts (JSON-friendly)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])],
            "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    return annotation_to_mask(rle, h, w)
