"""Settings of mask tokens: the only reader of its ``SVP_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from svp.common import settings as s


@dataclass(frozen=True)
class MasktokSettings:
    mask_loss_weight: float = s.env(
        "SVP_MASK_LOSS_WEIGHT", 2.0, s.number(minimum=0),
        "loss weight of the tokens of each `<|mt_start|>...<|mt_end|>` span under "
        "`--loss_scale default+mask_span` (other trained tokens: 1)")
    constrain_masks: bool = s.env(
        "SVP_CONSTRAIN_MASKS", True, s.boolean,
        "constrain generation through ms-swift's transformers engine so that every mask is "
        "start, first-level code, second-level code, end (`0`: off)")
    plm_max_tiles: int = s.env(
        "SVP_PLM_MAX_TILES", 8, s.integer(minimum=1),
        "PerceptionLM (`--model_type perception_lm`): most tiles per image, the thumbnail "
        "not counted (SAMTok's PLM-1B config: 8; the released processor: 36)")


def load(environ=None) -> MasktokSettings:
    return s.load(MasktokSettings, "masktok", environ)
