"""Settings of the crop tool and R-GRPO: the only reader of their ``SVP_*`` variables.

The sizes must be equal in the converter, the SFT template, the R-GRPO rollouts and the
inference loop; the recipes export the same environment to each. The judge is optional.
"""

from __future__ import annotations

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

    def policy(self, family: str):
        """The :class:`~svp.croptool.geometry.CropPolicy` of a model family."""
        from svp.croptool.geometry import CropPolicy

        return CropPolicy(family, self.main_short, self.crop_max_short)

    def judge(self):
        """The :class:`~svp.croptool.judge.Judge`, or None when no URL is set."""
        if not self.judge_url:
            return None
        from svp.croptool.judge import Judge

        return Judge(self.judge_url, self.judge_model, self.judge_api_key, self.judge_timeout,
                     self.judge_workers)


def load(environ=None) -> CropSettings:
    return s.load(CropSettings, "croptool", environ)
