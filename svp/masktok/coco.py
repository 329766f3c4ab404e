"""COCO segmentation helpers: polygons / RLE to masks, and masks to JSON-friendly RLE."""

from __future__ import annotations

import numpy as np


def annotation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """COCO polygons (list of lists, parts merged), uncompressed RLE (list counts) or
    compressed RLE -> bool [H, W]. An empty polygon list gives an empty mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        parts = [p for p in segmentation if len(p) >= 6]
        if not parts:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
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
