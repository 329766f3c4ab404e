"""Settings of NEO: the only reader of its ``SVP_NEO_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from svp.common import settings as s
from svp.neo.loss import REDUCTIONS


@dataclass(frozen=True)
class NeoSettings:
    loss_reduction: str = s.env(
        "SVP_NEO_LOSS_REDUCTION", "square", s.choice(*REDUCTIONS),
        "per-token weight of a sample with n supervised tokens: `token` 1, `sample` 1/n, "
        "`square` 1/sqrt(n) (upstream's default); the loss is sum(w*ce)/sum(w) per packed row")
    min_pixels: int = s.env(
        "SVP_NEO_MIN_PIXELS", 0, s.integer(minimum=0),
        "smallest image area after smart_resize (`0`: the checkpoint's `vision_config`)")
    max_pixels: int = s.env(
        "SVP_NEO_MAX_PIXELS", 0, s.integer(minimum=0),
        "largest image area after smart_resize (`0`: the checkpoint's `vision_config`); in "
        "training a sample of n > 1 images gives each max(2*max/n, min), as upstream")
    row_length: int = s.env(
        "SVP_NEO_ROW_LENGTH", 0, s.integer(minimum=0),
        "cap of a packed training row (upstream's `max_seq_length`): samples of a micro-batch "
        "that would overflow it are left out, counted and logged (`0`: no cap)")
    attn: str = s.env(
        "SVP_NEO_ATTN", "auto", s.choice("auto", "sdpa", "flex"),
        "attention kernel: `auto` flex attention on CUDA, dense SDPA with the exact mask "
        "elsewhere; `sdpa` / `flex` force one")

    def __post_init__(self):
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise s.SettingsError(f"SVP_NEO_MIN_PIXELS {self.min_pixels} > SVP_NEO_MAX_PIXELS "
                                  f"{self.max_pixels}")

    def pixel_bounds(self, vision_config) -> tuple[int, int]:
        lo = self.min_pixels or vision_config.min_pixels
        hi = self.max_pixels or vision_config.max_pixels
        if lo > hi:
            raise s.SettingsError(f"SVP_NEO_MIN_PIXELS {lo} > SVP_NEO_MAX_PIXELS {hi}")
        return lo, hi


def load(environ=None) -> NeoSettings:
    return s.load(NeoSettings, "neo", environ)
