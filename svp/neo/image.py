"""NEO's image preprocessing (upstream: VLMTrainKit/neo/model/modeling_neo_vit.py and its data
processor): smart_resize to multiples of 32,
BICUBIC, ImageNet normalisation, 16x16 patches flattened channel-major in row-major order."""

from __future__ import annotations

import math

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_ASPECT = 200


def smart_resize(height: int, width: int, factor: int = 32, min_pixels: int = 65536,
                 max_pixels: int = 4194304) -> tuple[int, int]:
    """Both sides rounded to multiples of ``factor`` (Python's banker's ``round``, as
    upstream), then scaled into ``[min_pixels, max_pixels]`` keeping the aspect ratio."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size {height}x{width} is empty")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds {MAX_ASPECT}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def image_max_pixels(n_images: int, min_pixels: int, max_pixels: int, training: bool) -> int:
    """Upstream's training budget for a sample of n > 1 images: each gets
    ``max(2 * max_pixels / n, min_pixels)``; inference gives every image the full bound."""
    if not training or n_images <= 1:
        return max_pixels
    return max(int(2 * max_pixels / n_images), min_pixels)


def to_rgb(image, training: bool):
    """RGB as upstream: training drops alpha; inference composites an image with any fully
    transparent pixel on white (upstream's contrast rule always picks white)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P") and not training:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 0:
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(image, min_pixels: int, max_pixels: int, factor: int = 32,
               training: bool = True) -> torch.Tensor:
    """``[3, H', W']`` float tensor: RGB, smart_resize, BICUBIC, ImageNet normalisation."""
    from PIL import Image

    image = to_rgb(image, training)
    h, w = smart_resize(image.height, image.width, factor, min_pixels, max_pixels)
    if (h, w) != (image.height, image.width):
        image = image.resize((w, h), Image.BICUBIC)
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = x.view(h, w, 3).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def flatten_patches(image: torch.Tensor, patch: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """``([gh * gw, 3 * patch * patch], (gh, gw))``: row k is patch (k // gw, k % gw),
    flattened channel-major as ``(c, py, px)``."""
    c, h, w = image.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not a multiple of the patch size {patch}")
    gh, gw = h // patch, w // patch
    x = image.view(c, gh, patch, gw, patch).permute(1, 3, 0, 2, 4)
    return x.reshape(gh * gw, c * patch * patch), (gh, gw)
