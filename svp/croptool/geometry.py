"""Crop-tool geometry: parsing tool calls, coordinate spaces, box checks, the resize policy.

One module decides every number a crop depends on, so SFT data, the training template, the
inference loop and the rewards all cut the same pixels:

* **Tool-call syntaxes** (all accepted, one canonical form written):
  ``{Crop <desc> [x1, y1, x2, y2]}`` (VLM-R3 training text),
  ``<tool_call>[x1, y1, x2, y2]</tool_call>`` (canonical),
  ``{"bbox_2d": [...]}`` (VLM-R3 model output) and
  ``<tool_call>{"name": ..., "arguments": {"bbox_2d": [...]}}</tool_call>`` (DeepEyes style).
* **Coordinate spaces.** ``pixel``: original image pixels (what annotation files store).
  ``resized``: pixels of the image *as the model receives it* (Qwen2.5-VL grounding).
  ``norm1000``: 0..1000 of the image (Qwen3-VL). Text given to or produced by a model is in
  that model's space; :func:`to_space` / :func:`from_space` convert.
* **Resize policy.** The main image is scaled so its shorter side is ``main_short`` (448),
  aspect kept, then snapped by the model's own ``smart_resize`` (multiples of patch x merge:
  28 for Qwen2.5-VL, 32 for Qwen3-VL, within its pixel bounds), so the template does not
  resize it again. A crop is cut from the *original* image (full resolution), kept as it is
  when its shorter side is <= ``crop_max_short`` (448), downscaled to that otherwise, and
  snapped the same way. Boxes narrower than one merged patch grow around their centre.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from PIL import Image

from svp.common.image_check import model_input_size
from svp.common.settings import DEFAULT_MAX_TOKENS, DEFAULT_MIN_TOKENS
from svp.croptool.format import CALL_OPEN, STOP

FAMILIES = {"qwen2_5_vl": ("resized", 14), "qwen3_vl": ("norm1000", 16)}
SPACES = ("pixel", "resized", "norm1000")
MERGE = 2

_NUM_LIST = r"\[(?P<nums>[^\[\]]*)\]"
_CROP_RE = re.compile(r"\{\s*Crop\b(?P<desc>[^\[\]{}]*)" + _NUM_LIST + r"\s*\}")
_TOOL_RE = re.compile(r"<tool_call>\s*(?P<body>.*?)\s*</tool_call>", re.S)  # the definition
_BARE_RE = re.compile(r"\{\s*\"bbox_2d\"\s*:\s*" + _NUM_LIST + r"\s*\}")


def family_of(model_type: str) -> str:
    """``qwen2_5_vl`` / ``qwen3_vl`` from an ms-swift model or template type."""
    for fam in FAMILIES:
        if model_type.startswith(fam):
            return fam
    raise ValueError(f"crop tool: unsupported model family {model_type!r} "
                     f"(expected one of {sorted(FAMILIES)})")


def factor_of(family: str) -> int:
    """Pixels per merged patch: 28 (Qwen2.5-VL), 32 (Qwen3-VL)."""
    return FAMILIES[family][1] * MERGE


def space_of(family: str) -> str:
    return FAMILIES[family][0]


# ----------------------------------------------------------------------------- parsing
@dataclass
class ToolCall:
    """One crop request found in text. ``box`` is None when it could not be read."""

    start: int
    end: int
    form: str  # "crop" | "tool_call" | "tool_call_json" | "bbox_2d"
    box: tuple[float, float, float, float] | None
    error: str | None = None
    desc: str = ""


def _numbers(text: str) -> tuple[tuple[float, ...] | None, str | None]:
    try:  # the common case in one pass (float() ignores surrounding whitespace)
        vals = tuple(map(float, text.split(",")))
        if len(vals) == 4 and all(map(math.isfinite, vals)):
            return vals, None
    except ValueError:
        pass
    parts = [p.strip() for p in text.split(",")]  # something is wrong: say what
    if len(parts) != 4 or any(not p for p in parts):
        return None, f"expected 4 coordinates, got {len([p for p in parts if p])}"
    vals = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            return None, f"non-numeric coordinate {p!r}"
        if not math.isfinite(v):
            return None, f"coordinate {p} is not finite"
        vals.append(v)
    return tuple(vals), None


def _json_box(body: str) -> tuple[tuple[float, ...] | None, str | None]:
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return None, "tool call is neither a box list nor valid JSON"
    if isinstance(obj, dict) and isinstance(obj.get("arguments"), dict | str):
        args = obj["arguments"]
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None, "tool call arguments are not valid JSON"
        obj = args
    box = obj.get("bbox_2d") if isinstance(obj, dict) else None
    if not isinstance(box, list):
        return None, "tool call has no bbox_2d list"
    if len(box) != 4:
        return None, f"expected 4 coordinates, got {len(box)}"
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
        return None, f"non-numeric coordinate in {box!r}"
    if not all(math.isfinite(v) for v in box):
        return None, "coordinate is not finite"
    return tuple(float(v) for v in box), None


def _tool_call_spans(text: str):
    """(start, end, body) of each ``<tool_call>..</tool_call>``, exactly what
    ``_TOOL_RE.finditer`` yields (the body up to the first closing tag, surrounding
    whitespace stripped), by substring search: several times faster than the regex."""
    open_at = text.find(CALL_OPEN)
    while open_at >= 0:
        close_at = text.find(STOP, open_at + len(CALL_OPEN))
        if close_at < 0:
            return
        end = close_at + len(STOP)
        yield open_at, end, text[open_at + len(CALL_OPEN):close_at].strip()
        open_at = text.find(CALL_OPEN, end)


def _found_calls(text: str) -> list[tuple[int, int, str, object]]:
    """(start, end, form, what was matched) of every call in ``text``, in order: the
    ``<tool_call>`` forms first, then ``{Crop ...}`` and bare ``{"bbox_2d": ...}`` where they
    do not start inside an earlier find."""
    found: list[tuple[int, int, str, object]] = [
        (start, end, "tool_call", body) for start, end, body in _tool_call_spans(text)]
    plain = len(found)
    # the other forms have a literal their patterns cannot match without
    for regex, form, literal in ((_CROP_RE, "crop", "Crop"), (_BARE_RE, "bbox_2d", "bbox_2d")):
        for m in regex.finditer(text) if literal in text else ():
            if not any(s <= m.start() < e for s, e, _, _ in found):
                found.append((m.start(), m.end(), form, m))
    if len(found) > plain:
        found.sort(key=lambda f: f[0])
    return found


def call_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every crop request in ``text``, in order: the spans of
    :func:`parse_tool_calls` without reading the boxes (what segment lengths need)."""
    return [(start, end) for start, end, _, _ in _found_calls(text)] if isinstance(
        text, str) else []


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every crop request in ``text``, in order; never raises (bad ones carry ``error``)."""
    if not isinstance(text, str):
        return []
    calls: list[ToolCall] = []
    for start, end, form, found in _found_calls(text):
        if form == "tool_call":
            body = found
            if body.startswith("["):
                inner = body[1:-1] if body.endswith("]") else body[1:]
                box, err = (_numbers(inner) if body.endswith("]")
                            else (None, "unterminated box list"))
            else:
                box, err = _json_box(body)
                form = "tool_call_json"
            calls.append(ToolCall(start, end, form, box, err))
        else:
            box, err = _numbers(found.group("nums"))
            desc = found.group("desc").strip() if form == "crop" else ""
            calls.append(ToolCall(start, end, form, box, err, desc))
    return calls


def format_tool_call(box) -> str:
    """The canonical text: ``<tool_call>[x1, y1, x2, y2]</tool_call>`` with integer coords."""
    return "<tool_call>[" + ", ".join(str(int(round(v))) for v in box) + "]</tool_call>"


# ----------------------------------------------------------------------------- boxes
def check_box(box, width: int, height: int) -> tuple[tuple[float, float, float, float] | None,
                                                        str | None]:
    """Pixel box -> (box clamped to the image, None) or (None, reason). Never raises."""
    try:
        vals = tuple(map(float, box))
    except (TypeError, ValueError):
        return None, f"non-numeric box {box!r}"
    if len(vals) != 4:
        return None, f"expected 4 coordinates, got {len(vals)}"
    x1, y1, x2, y2 = vals
    if not (math.isfinite(x1) and math.isfinite(y1) and math.isfinite(x2)
            and math.isfinite(y2)):
        return None, "coordinate is not finite"
    if x1 > x2 or y1 > y2:
        return None, f"swapped corners ({x1:g},{y1:g}) / ({x2:g},{y2:g})"
    if x1 == x2 or y1 == y2:
        return None, "zero-area box"
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, f"box lies outside the {width}x{height} image"
    return (cx1, cy1, cx2, cy2), None


def to_space(box, space: str, orig_wh: tuple[int, int], model_wh: tuple[int, int]):
    """Original-pixel box -> ``space`` (floats; round when writing text)."""
    w, h = orig_wh
    if space == "pixel":
        return tuple(float(v) for v in box)
    if space == "resized":
        sx, sy = model_wh[0] / w, model_wh[1] / h
        return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    if space == "norm1000":
        return (box[0] / w * 1000, box[1] / h * 1000, box[2] / w * 1000, box[3] / h * 1000)
    raise ValueError(f"unknown coordinate space {space!r} (one of {SPACES})")


def from_space(box, space: str, orig_wh: tuple[int, int], model_wh: tuple[int, int]):
    """Box in ``space`` -> original pixels (floats)."""
    w, h = orig_wh
    if space == "pixel":
        return tuple(float(v) for v in box)
    if space == "resized":  # multiply, then divide: VLM-R3's order (its int() cut agrees)
        mw, mh = model_wh
        return (box[0] * w / mw, box[1] * h / mh, box[2] * w / mw, box[3] * h / mh)
    if space == "norm1000":
        return (box[0] * w / 1000, box[1] * h / 1000, box[2] * w / 1000, box[3] * h / 1000)
    raise ValueError(f"unknown coordinate space {space!r} (one of {SPACES})")


# ----------------------------------------------------------------------------- resizing
ZOOMS = ("none", "vlmr3")
CUTS = ("ours", "vlmr3")


def vlmr3_cut(box_px, width: int, height: int) -> tuple[tuple[int, int, int, int] | None,
                                                         str | None]:
    """The pixel rectangle VLM-R3's agent cuts for a box already mapped to original pixels
    (its ``bbox_transform`` + ``get_img_crop``): every coordinate truncated with ``int``,
    x1/y1 at least 0, x2/y2 at most the last pixel and **inclusive** (PIL box right/bottom =
    x2 + 1, y2 + 1); empty after that = failed. No widening of thin boxes."""
    x1, y1 = max(0, int(box_px[0])), max(0, int(box_px[1]))
    x2, y2 = min(width - 1, int(box_px[2])), min(height - 1, int(box_px[3]))
    if x1 >= x2 or y1 >= y2:
        return None, f"box {tuple(box_px)} is empty once cut to whole pixels (VLM-R3's cut)"
    return (x1, y1, x2 + 1, y2 + 1), None


def vlmr3_zoom(crop_area: float, image_area: float) -> float:
    """VLM-R3's crop scale (its agent's ``_crop_and_save_region``): 2 below 1/8 of the image,
    1 from 1/2 up, linear in between."""
    r = crop_area / image_area
    if r < 0.125:
        return 2.0
    if r >= 0.5:
        return 1.0
    return 2.0 - (r - 0.125) / 0.375




@dataclass(frozen=True)
class CropPolicy:
    """Sizes for one model family; ``main_short=0`` leaves the main image to the pixel
    budget alone. ``min_pixels`` / ``max_pixels``: the processor's bounds (0: qwen_vl_utils'
    defaults); build it with :meth:`svp.croptool.settings.CropSettings.policy` so they are
    the ones ms-swift derives from ``MAX_PIXELS`` in the training process."""

    family: str = "qwen2_5_vl"
    main_short: int = 448
    crop_max_short: int = 448
    factor: int = field(default=0)
    min_pixels: int = 0
    max_pixels: int = 0
    #: crop sizing: ``none`` (ours: kept as cut, short side capped at ``crop_max_short``) or
    #: ``vlmr3`` (VLM-R3's agent: x2 zoom below 1/8 of the image, linear to x1 at 1/2, then
    #: within [4, 1024] merged patches, LANCZOS)
    zoom: str = "none"
    #: the pixel rectangle of a box: ``ours`` (floor / ceil of the box widened to at least one
    #: merged patch) or ``vlmr3`` (VLM-R3's: truncated with ``int``, x2 / y2 inclusive)
    cut: str = "ours"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}")
        if self.main_short < 0 or self.crop_max_short <= 0:
            raise ValueError("main_short must be >= 0 and crop_max_short > 0")
        if not self.factor:
            object.__setattr__(self, "factor", factor_of(self.family))
        if not self.min_pixels:
            object.__setattr__(self, "min_pixels", DEFAULT_MIN_TOKENS * self.factor ** 2)
        if not self.max_pixels:
            object.__setattr__(self, "max_pixels", DEFAULT_MAX_TOKENS * self.factor ** 2)
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        if self.zoom not in ZOOMS:
            raise ValueError(f"unknown crop zoom {self.zoom!r} (one of {ZOOMS})")
        if self.cut not in CUTS:
            raise ValueError(f"unknown crop cut {self.cut!r} (one of {CUTS})")

    @property
    def space(self) -> str:
        return space_of(self.family)

    def data_space(self, width: int, height: int) -> str:
        """What the numbers of a tool call in training text mean for a ``width`` x ``height``
        source under this policy, as the converter records it in each row (``crop_space``)
        and the crop template checks it: Qwen3-VL's 0..1000 is the same at any size;
        Qwen2.5-VL's pixels are those of the main image as the model is given it, so its size
        is part of it. Data converted for one and trained with another would put every crop
        elsewhere; a setting that does not change this image's size changes nothing."""
        if self.space != "resized":
            return self.family
        w, h = self.main_size(width, height)
        return f"{self.family} {w}x{h}"

    def main_size(self, width: int, height: int) -> tuple[int, int]:
        """Size the main image is given to the model at."""
        if self.main_short:
            s = self.main_short / min(width, height)
            width, height = max(1, round(width * s)), max(1, round(height * s))
        return model_input_size(width, height, self.factor, self.min_pixels, self.max_pixels)

    def crop_size(self, width: int, height: int) -> tuple[int, int]:
        short = min(width, height)
        if short > self.crop_max_short:
            s = self.crop_max_short / short
            width, height = max(1, round(width * s)), max(1, round(height * s))
        return model_input_size(width, height, self.factor, self.min_pixels, self.max_pixels)

    def main_image(self, image: Image.Image) -> Image.Image:
        """The main image exactly as the model will see it (bicubic, like qwen_vl_utils)."""
        size = self.main_size(*image.size)
        return image if size == image.size else image.resize(size, Image.BICUBIC)

    def box_to_pixels(self, box, image_wh: tuple[int, int]):
        """A box in the model's space (text the model read or wrote) -> original pixels."""
        return from_space(box, self.space, image_wh, self.main_size(*image_wh))

    def box_to_model(self, box, image_wh: tuple[int, int]):
        return to_space(box, self.space, image_wh, self.main_size(*image_wh))

    def grow(self, box, width: int, height: int):
        """Widen a box to at least one merged patch per side (in original pixels), centred,
        kept inside the image; thin strips also get context up to aspect ratio 150."""
        x1, y1, x2, y2 = box
        # at least one merged patch, and no thinner than 1/150 of the long side (the Qwen
        # processors refuse aspect ratios over 200)
        long_side = max(x2 - x1, y2 - y1)
        need_w = min(max(self.factor, long_side / 150), width)
        need_h = min(max(self.factor, long_side / 150), height)
        if x2 - x1 < need_w:
            cx = (x1 + x2) / 2
            x1 = min(max(cx - need_w / 2, 0), width - need_w)
            x2 = x1 + need_w
        if y2 - y1 < need_h:
            cy = (y1 + y2) / 2
            y1 = min(max(cy - need_h / 2, 0), height - need_h)
            y2 = y1 + need_h
        return (x1, y1, x2, y2)

    def rectangle(self, box_px, width: int, height: int) -> tuple[tuple[int, int, int, int]
                                                                   | None, str | None]:
        """The pixel rectangle (PIL's left, top, right, bottom) a checked original-pixel box
        cuts, or (None, reason) when nothing is left of it."""
        if self.cut == "vlmr3":
            return vlmr3_cut(box_px, width, height)
        x1, y1, x2, y2 = self.grow(box_px, width, height)
        return (int(math.floor(x1)), int(math.floor(y1)), min(int(math.ceil(x2)), width),
                min(int(math.ceil(y2)), height)), None

    def crop(self, image: Image.Image, box_px) -> Image.Image:
        """Cut a checked original-pixel box from the original image and size it."""
        w, h = image.size
        rect, reason = self.rectangle(box_px, w, h)
        if rect is None:
            raise ValueError(reason)
        return self._sized(image.crop(rect), w, h)

    def _sized(self, region: Image.Image, w: int, h: int) -> Image.Image:
        """A cut region resized as the policy says (``w`` x ``h``: the whole image)."""
        if self.zoom == "vlmr3":
            cw, ch = region.size
            scale = vlmr3_zoom(cw * ch, w * h)
            size = model_input_size(int(scale * cw), int(scale * ch), self.factor,
                                    4 * self.factor ** 2, 1024 * self.factor ** 2)
            return region if size == region.size else region.resize(size, Image.LANCZOS)
        size = self.crop_size(*region.size)
        return region if size == region.size else region.resize(size, Image.BICUBIC)

    def execute(self, image: Image.Image, box_model) -> tuple[Image.Image | None,
                                                               tuple | None, str | None]:
        """A box as the model wrote it -> (crop, box in original pixels, None) or
        (None, None, reason). The one function training and inference both call."""
        try:
            px = self.box_to_pixels(box_model, image.size)
        except (TypeError, ValueError, IndexError) as exc:
            return None, None, f"bad box {box_model!r}: {exc}"
        checked, reason = check_box(px, *image.size)
        if checked is None:
            return None, None, reason
        rect, reason = self.rectangle(checked, *image.size)
        if rect is None:
            return None, None, reason
        try:  # the processor's own refusal (aspect ratio over 200) fails the call, as upstream
            return self._sized(image.crop(rect), *image.size), checked, None
        except ValueError as exc:
            return None, None, f"crop {rect} cannot be given to the model: {exc}"

