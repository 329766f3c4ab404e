"""Settings of the crop tool and R-GRPO: the only reader of their ``SVP_*`` variables.

The sizes must be equal in the converter, the SFT template, the R-GRPO rollouts and the
inference loop; the recipes export the same environment to each. The judge is optional.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from svp.common import settings as s

MAX_SIDE = 8192  # a shorter side above this is a typo: PIL would allocate the resize first


def _side(allow_zero: bool):
    """A shorter side in pixels: one merged patch (28) up to MAX_SIDE, or 0 where it means
    "left to the pixel budget"."""
    def parse(text: str) -> int:
        value = s.integer()(text)
        if allow_zero and value == 0:
            return 0
        if not 28 <= value <= MAX_SIDE:
            raise ValueError(f"expected {'0 or ' if allow_zero else ''}28..{MAX_SIDE} pixels "
                             "(one merged patch up to a sane picture)")
        return value
    return parse


@dataclass(frozen=True)
class CropSettings:
    main_short: int = s.env(
        "SVP_CROP_MAIN_SHORT", 448, _side(allow_zero=True),
        "shorter side the main image is given to the model at (`0`: left to `MAX_PIXELS`)")
    crop_max_short: int = s.env(
        "SVP_CROP_MAX_SHORT", 448, _side(allow_zero=False),
        "a crop is kept as cut when its shorter side is at most this, downscaled otherwise")
    zoom: str = s.env(
        "SVP_CROP_ZOOM", "none", s.choice("none", "vlmr3"),
        "crop sizing: `none` (a crop is kept as cut, short side capped at SVP_CROP_MAX_SHORT) "
        "or `vlmr3` (VLM-R3's: x2 zoom below 1/8 of the image, linear to x1 at 1/2, within "
        "4..1024 merged patches)")
    cut: str = s.env(
        "SVP_CROP_CUT", "ours", s.choice("ours", "vlmr3"),
        "pixels a box cuts: `ours` (floor/ceil, boxes thinner than one merged patch widened) "
        "or `vlmr3` (VLM-R3's: coordinates truncated with int(), x2/y2 inclusive, no widening)")
    judge_url: str | None = s.env(
        "SVP_JUDGE_URL", None, s.text,
        "OpenAI-compatible endpoint of the LLM judge for free-form answers (unset: no judge)")
    judge_model: str | None = s.env(
        "SVP_JUDGE_MODEL", None, s.text,
        "model name sent to the judge (unset: the first one its `/models` lists)")
    judge_api_key: str | None = s.env(
        "SVP_JUDGE_API_KEY", None, s.text, "bearer token for the judge (never logged)",
        secret=True)
    judge_timeout: float = s.env(
        "SVP_JUDGE_TIMEOUT", 30.0, s.number(positive=True), "seconds per judge request")
    judge_workers: int = s.env(
        "SVP_JUDGE_WORKERS", 8, s.integer(minimum=1), "judge requests in flight")

    def with_sizes(self, main_short: int | None = None,
                   crop_max_short: int | None = None) -> CropSettings:
        """These settings with sizes given on a command line (None: keep), checked as the
        variables are (a tool's ``--main-short 1`` is as wrong as ``SVP_CROP_MAIN_SHORT=1``)."""
        import dataclasses

        changes = {}
        for name, value, flag in (("main_short", main_short, "--main-short"),
                                  ("crop_max_short", crop_max_short, "--crop-max-short")):
            if value is None:
                continue
            field = next(f for f in dataclasses.fields(self) if f.name == name)
            try:
                changes[name] = field.metadata["parse"](str(value))
            except ValueError as exc:
                raise s.SettingsError(f"{flag} {value}: {exc}") from None
        return dataclasses.replace(self, **changes)

    def policy(self, family: str, environ: Mapping[str, str] | None = None,
               max_pixels: int | None = None):
        """The :class:`~svp.croptool.geometry.CropPolicy` of a model family, with the
        processor's pixel bounds of this environment (:func:`pixel_bounds`); ``max_pixels``
        overrides ``MAX_PIXELS`` (the converter's ``--max-pixels``)."""
        from svp.croptool.geometry import CropPolicy

        env = dict(os.environ if environ is None else environ)
        if max_pixels is not None:
            env.pop("IMAGE_MAX_TOKEN_NUM", None)
            env["MAX_PIXELS"] = str(max_pixels)
        lo, hi = pixel_bounds(family, env)
        return CropPolicy(family, self.main_short, self.crop_max_short, min_pixels=lo,
                          max_pixels=hi, zoom=self.zoom, cut=self.cut)

    def judge(self):
        """The :class:`~svp.croptool.judge.Judge`, or None when no URL is set."""
        if not self.judge_url:
            return None
        from svp.croptool.judge import Judge

        return Judge(self.judge_url, self.judge_model, self.judge_api_key, self.judge_timeout,
                     self.judge_workers)


def pixel_bounds(family: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(min_pixels, max_pixels) of the Qwen processor of ``family`` in an ms-swift process
    started with this environment (:func:`svp.common.settings.qwen_pixel_bounds`): a
    converter run in the same environment as training writes boxes in the space training
    sees, whatever the image size."""
    from svp.croptool.geometry import factor_of

    return s.qwen_pixel_bounds(factor_of(family), environ)


def load(environ=None) -> CropSettings:
    return s.load(CropSettings, "croptool", environ)
