"""Settings of the crop tool and R-GRPO: the only reader of their ``SVP_*`` variables.

The sizes must be equal in the converter, the SFT template, the R-GRPO rollouts and the
inference loop; the recipes export the same environment to each. The judge is optional.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from svp.common import settings as s


@dataclass(frozen=True)
class CropSettings:
    main_short: int = s.env(
        "SVP_CROP_MAIN_SHORT", 448, s.integer(minimum=0),
        "shorter side the main image is given to the model at (`0`: left to `MAX_PIXELS`)")
    crop_max_short: int = s.env(
        "SVP_CROP_MAX_SHORT", 448, s.integer(minimum=1),
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
    """(min_pixels, max_pixels) of the Qwen processor in an ms-swift process started with this
    environment, resolved as ms-swift resolves them when it loads the processor
    (``compat_qwen_vl_utils`` then ``patch_qwen_vl_utils``): ``IMAGE_MAX_TOKEN_NUM`` if set,
    else ``MAX_PIXELS // factor**2`` tokens, else qwen_vl_utils' default; the same for the
    minimum. A converter run in the same environment as training writes boxes in the space
    training sees, whatever the image size."""
    from svp.croptool.geometry import DEFAULT_MAX_TOKENS, DEFAULT_MIN_TOKENS, factor_of

    env = os.environ if environ is None else environ
    factor = factor_of(family)

    def tokens(token_var: str, pixel_var: str, default: int) -> int:
        for var, scale in ((token_var, 1), (pixel_var, factor ** 2)):
            raw = env.get(var)
            if raw:
                try:
                    return int(raw) // scale
                except ValueError:
                    raise ValueError(f"{var}={raw!r} is not an integer") from None
        return default

    lo = tokens("IMAGE_MIN_TOKEN_NUM", "MIN_PIXELS", DEFAULT_MIN_TOKENS)
    hi = tokens("IMAGE_MAX_TOKEN_NUM", "MAX_PIXELS", DEFAULT_MAX_TOKENS)
    return lo * factor ** 2, hi * factor ** 2


def load(environ=None) -> CropSettings:
    return s.load(CropSettings, "croptool", environ)
