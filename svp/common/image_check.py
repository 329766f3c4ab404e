"""Is a picture usable for training, checked the way training will read it?

ms-swift opens every picture with PIL, converts it to RGB and hands it to the Qwen
processor; when that fails inside ``template.encode`` it silently trains on another,
randomly drawn sample instead ("another piece of data will be randomly selected"), with rc
0 and no count. A header check lets through exactly the pictures that fail there, so this
module reads a picture as training will:

- the whole file is decoded (a truncated JPEG has a valid header and fails only here);
- PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is a named bad row, not a crash
  or a warning ignored (a 48 KB PNG can declare 20000 x 20000 pixels);
- samples wider than 8 bits (modes ``I;16``, ``I``, ``F``) are refused: ``convert("RGB")``
  clips them, and a 16-bit PNG becomes almost all white;
- the aspect ratio must pass both of the Qwen processors' checks: qwen_vl_utils refuses a
  ratio above 200, and the HF image processor refuses one above 200 *after* qwen_vl_utils'
  resize, which can raise it (20000 x 100 is exactly 200 but becomes 14140 x 56); the
  resize is computed for both patch sizes (Qwen2.5-VL 28, Qwen3-VL 32) with the run's
  pixel budget.

The EXIF orientation is reported, not refused: every tool here (and ms-swift) uses the stored
pixels, so a box drawn on the picture as a viewer rotates it would be wrong.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_RATIO = 200  # qwen_vl_utils' MAX_RATIO and the HF Qwen image processor's limit
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;32", "I;32B", "I;32L",
              "I;32S", "F", "F;32", "F;32B"}
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageCheck:
    """What one picture is: ``error`` (None when usable) with its ``kind`` (``missing``,
    ``unreadable``, ``too large``, ``wide samples``, ``aspect ratio``), the size, and the
    EXIF orientation (1 = none)."""

    error: str | None = None
    kind: str | None = None
    size: tuple[int, int] | None = None
    orientation: int = 1


def row_kind(check: ImageCheck) -> str | None:
    """The bad-row kind a failed check is reported under: ``missing_image``,
    ``unreadable_image`` (cannot be decoded safely) or ``unusable_image`` (decodes, but
    training would refuse or spoil it)."""
    if check.error is None:
        return None
    return {"missing": "missing_image", "unreadable": "unreadable_image",
            "too large": "unreadable_image"}.get(check.kind, "unusable_image")


def model_input_size(width: int, height: int, factor: int, min_pixels: int,
                     max_pixels: int) -> tuple[int, int]:
    """(w, h) the Qwen processor feeds for an image of this size: qwen_vl_utils'
    ``smart_resize`` within ``[min_pixels, max_pixels]`` (raises ValueError as it does). The
    one function that decides the model input size: the image checks here and the crop
    tool's converter, template, rollouts and inference loop (through its ``CropPolicy``)."""
    from qwen_vl_utils import vision_process as vp

    h, w = vp.smart_resize(height, width, factor=factor, min_pixels=min_pixels,
                           max_pixels=max_pixels)
    return w, h


def ratio_problem(width: int, height: int,
                  budgets: Sequence[tuple[int, int, int]]) -> str | None:
    """Why the Qwen processors refuse a ``width`` x ``height`` picture, or None.
    ``budgets``: (factor, min_pixels, max_pixels) per model family to check."""
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_RATIO:
        return f"aspect ratio {ratio:.1f}:1 is above the processor's {MAX_RATIO}:1"
    for factor, lo, hi in budgets:
        try:
            w, h = model_input_size(width, height, factor, lo, hi)
        except ValueError as exc:
            return f"the processor refuses it at patch size {factor}: {exc}"
        if max(w, h) / min(w, h) > MAX_RATIO:
            return (f"resized for the model to {w}x{h} (patch {factor}, max_pixels {hi}) its "
                    f"aspect ratio is {max(w, h) / min(w, h):.1f}:1, above the processor's "
                    f"{MAX_RATIO}:1")
    return None


def check_image(path: str | os.PathLike, budgets: Sequence[tuple[int, int, int]] = (),
                full: bool = True) -> ImageCheck:
    """Read ``path`` as training will (see the module docstring). ``full=False`` stops
    after the header (size, mode, orientation): seconds instead of minutes on a large
    dataset, but a truncated file passes."""
    return _read(path, budgets, full, rgb=False)[0]


def open_rgb(path: str | os.PathLike, budgets: Sequence[tuple[int, int, int]] = ()):
    """(RGB picture, check) or (None, check with the reason), decoding the file once: the
    data tools' one way to read a picture, so they refuse what training would (never a
    16-bit picture clipped to white, a bomb or a truncated file)."""
    check, image = _read(path, budgets, full=True, rgb=True)
    return (None, check) if check.error else (image, check)


def _read(path, budgets, full: bool, rgb: bool):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        return ImageCheck("image file not found", "missing"), None
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size, mode = im.size, im.mode
                try:
                    orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
                except Exception:  # noqa: BLE001 - a broken EXIF block is not our concern
                    orientation = 1
                if full:
                    im.load()
                if rgb and mode not in WIDE_MODES:
                    image = im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck(f"too large to decode safely ({exc})", "too large"), None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return ImageCheck(f"cannot be read as an image ({type(exc).__name__}: {exc})",
                          "unreadable"), None
    w, h = size
    if w <= 0 or h <= 0:
        return ImageCheck(f"zero-sized image ({w}x{h})", "unreadable", size), None
    if mode in WIDE_MODES:
        return ImageCheck(f"mode {mode}: samples wider than 8 bits, which the RGB conversion "
                          "training applies clips (a 16-bit picture turns almost white); "
                          "convert it to 8 bits first", "wide samples", size, orientation), None
    why = ratio_problem(w, h, budgets)
    if why:
        return ImageCheck(f"{w}x{h}: {why}", "aspect ratio", size, orientation), None
    return ImageCheck(None, None, size, orientation), image
