"""The codec interface shared by the builtin and the official SAMTok back-ends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from svp.common.images import IMAGENET_MEAN, IMAGENET_STD

ImageLike = Image.Image | np.ndarray


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """HxWx3 uint8 from a PIL image or an array (grey, RGB or RGBA)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr[..., :3]


def squash_normalise(arr: np.ndarray, size: int, resample: int) -> torch.Tensor:
    """RGB array -> [3,size,size] float tensor: squashed (aspect not kept, as SAMTok's
    DirectResize), /255, ImageNet mean/std. Both back-ends differ only in size and filter."""
    im = Image.fromarray(arr).resize((size, size), resample)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def masks_to_boxes(masks: np.ndarray, inclusive: bool = False) -> np.ndarray:
    """[N,H,W] masks -> [N,4] float xyxy pixel boxes; empty mask -> NaNs. x2/y2 are the
    exclusive pixel edge (our builtin codec's convention), or with ``inclusive`` the index of
    the last pixel, as ``torchvision.ops.masks_to_boxes``, which SAMTok's data scripts use to
    prompt its encoder (the samtok back-end, so its codes are the release's)."""
    masks = np.asarray(masks).astype(bool)
    boxes = np.full((masks.shape[0], 4), np.nan, dtype=np.float32)
    end = 0 if inclusive else 1
    for i, m in enumerate(masks):
        ys = np.flatnonzero(m.any(axis=1))
        xs = np.flatnonzero(m.any(axis=0))
        if len(xs):
            boxes[i] = (xs[0], ys[0], xs[-1] + end, ys[-1] + end)
    return boxes


class MaskCodec(ABC):
    """Masks of one image <-> codes ``[N, 2]`` (second code -1 when absent).

    ``encode`` needs the image because the codes describe a region *of that image*: the
    decoder segments it again from the image features, prompted by the codes.
    """

    name: str = "codec"
    threshold: float = 0.0  # on the decoder's logits

    @abstractmethod
    def decode_logits(self, image: ImageLike, codes) -> torch.Tensor:
        """Low-resolution mask logits [N, h, w] for codes [N, 2] (second may be -1)."""

    @abstractmethod
    def encode(self, image: ImageLike, masks: np.ndarray,
               boxes: np.ndarray | None = None) -> np.ndarray:
        """``masks`` [N,H,W] (nonzero = in) at image size; ``boxes`` [N,4] pixel xyxy, derived
        from the masks when None. Returns int64 codes [N, 2] with values in 0..255."""

    def decode(self, image: ImageLike, codes: Sequence[Sequence[int]] | np.ndarray
               ) -> np.ndarray:
        """Codes [N, 2] (second may be -1) -> bool masks [N, H, W] at the image's size:
        logits upsampled bilinearly, then ``> threshold`` on the logits (SAMTok's rule)."""
        arr = to_rgb_array(image)
        h, w = arr.shape[:2]
        logits = self.decode_logits(arr, codes)
        if len(logits) == 0:
            return np.zeros((0, h, w), dtype=bool)
        up = F.interpolate(logits[:, None], size=(h, w), mode="bilinear", align_corners=False)
        return (up[:, 0] > self.threshold).cpu().numpy()

    def encode_batch(self, images: Sequence[ImageLike], masks: Sequence[np.ndarray],
                     boxes: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Several images at once; back-ends override this to batch the network calls."""
        boxes = boxes or [None] * len(images)
        return [self.encode(im, m, b) for im, m, b in zip(images, masks, boxes, strict=True)]


def codec_fingerprint(spec: str) -> str:
    """What a codec spec's codes depend on: its kind and the SHA-256 of the files it loads
    (a retrained ``codec.pt`` at the same path is another codec). Data tools key their
    outputs with it."""
    from svp.common.io import file_sha256

    kind, _, path = spec.partition(":")
    if kind == "builtin":
        files = [Path(path)]
    elif kind == "samtok":
        from svp.masktok.codec.samtok import ARCH_NAME, find_weights

        weights = find_weights(path)
        files = [weights, *([weights.parent / ARCH_NAME]
                            if (weights.parent / ARCH_NAME).is_file() else [])]
    else:
        raise ValueError(f"codec spec {spec!r}: unknown kind {kind!r} (builtin or samtok)")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"codec files not found: {missing}")
    return f"{kind}:" + ",".join(f"{f.name}={file_sha256(f)}" for f in files)


def load_codec(spec: str, device: str = "cpu") -> MaskCodec:
    """``builtin:PATH`` (a checkpoint from train_mask_codec.py) or ``samtok:DIR`` (the released
    ``mask_tokenizer_256x2.pth``, in DIR or given as the file; needs the ``sam2`` package)."""
    kind, _, path = spec.partition(":")
    if not path:
        raise ValueError(f"codec spec {spec!r}: expected 'builtin:PATH' or 'samtok:DIR'")
    if kind == "builtin":
        from svp.masktok.codec.builtin import BuiltinCodec

        return BuiltinCodec.load(path, device=device)
    if kind == "samtok":
        from svp.masktok.codec.samtok import SamTokCodec

        return SamTokCodec.load(path, device=device)
    raise ValueError(f"codec spec {spec!r}: unknown kind {kind!r} (builtin or samtok)")
