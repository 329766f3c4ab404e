"""ms-swift side of mask tokens: vocabulary at load time, mask-span loss weight, constrained
decoding inside ms-swift's transformers engine.

- Every model ms-swift loads while this plugin is active gets the 514 mask tokens if its
  tokenizer lacks them (non-special, rows at mean + 0.02 std noise, never shrunk; see
  svp/common/vocab.py). Mask tokens in ``--new_special_tokens`` are refused (ms-swift would
  make them special, and ``skip_special_tokens`` decoding would drop them). Ids are
  deterministic, so ``swift infer --adapters`` re-creates the training vocabulary before
  loading the adapter's embed_tokens / lm_head.
- ``--loss_scale default+mask_span`` weights the tokens of every ``<|mt_start|>...<|mt_end|>``
  span by ``SVP_MASK_LOSS_WEIGHT`` (default 2.0) in assistant turns; other trained tokens 1.
- Generation through ms-swift's transformers engine (``swift infer``, GRPO rollouts without
  vLLM) is constrained so that every mask is start, first-level code, second-level code, end
  (``SVP_CONSTRAIN_MASKS=0`` turns it off).

Both settings come from :mod:`svp.masktok.settings`.
"""

from __future__ import annotations

import re

from swift.loss_scale import LossScale, loss_scale_map
from swift.model.register import ModelLoader
from swift.template import Template
from swift.utils import get_logger

from svp.common import swift_new_rows, swift_trainer
from svp.common.swift_vocab import grow_vocabulary, growth_message
from svp.masktok import settings, swift_perception_lm
from svp.masktok.tokens import MT_END, MT_START, MaskTokenLogitsProcessor, mask_token_list

logger = get_logger()
_MARK = "_svp_masktok_patched"
_SPAN_RE = re.compile(re.escape(MT_START) + r".*?" + re.escape(MT_END), re.S)


class MaskSpanLossScale(LossScale):
    """Splits a trained response into mask spans (weight w) and the rest (weight 1)."""

    is_binary = False

    def get_loss_scale(self, context, **kwargs):
        if not isinstance(context, str) or MT_START not in context:
            return [context], [1.0]
        weight = settings.load().mask_loss_weight
        parts, weights, pos = [], [], 0
        for m in _SPAN_RE.finditer(context):
            if m.start() > pos:
                parts.append(context[pos:m.start()])
                weights.append(1.0)
            parts.append(m.group(0))
            weights.append(weight)
            pos = m.end()
        if pos < len(context):
            parts.append(context[pos:])
            weights.append(1.0)
        return parts, weights


def refuse_special_mask_tokens(new_special_tokens) -> None:
    """``--new_special_tokens`` with mask tokens: ms-swift would add them as *special* tokens,
    which every ``skip_special_tokens`` decode (upstream's evaluation, vLLM's and
    transformers' defaults) drops, so each answer would read "No target."; their rows would
    get transformers' resize initialisation instead of the documented one. Stop first."""
    masks = set(mask_token_list())
    given = [t for t in (new_special_tokens or []) if t in masks]
    if given:
        raise ValueError(
            f"--new_special_tokens lists {len(given)} mask token(s) (e.g. {given[0]}): ms-swift "
            "adds them as special tokens, which skip_special_tokens decoding drops. "
            "plugins/masktok.py adds all 514 non-special with the documented initialisation "
            "when the model loads: remove them from --new_special_tokens (or prepare the "
            "model once with data_tools/add_special_tokens.py)")


def _patch_model_loader() -> None:
    original = ModelLoader._add_new_special_tokens

    def add_tokens(self, model, processor, config):
        refuse_special_mask_tokens(self.new_special_tokens)
        original(self, model, processor, config)
        summary = grow_vocabulary(self, model, processor, config, [(mask_token_list(), False)])
        if message := growth_message(summary, "mask tokens"):
            logger.info(f"masktok: {message}")

    ModelLoader._add_new_special_tokens = add_tokens


def _patch_generation() -> None:
    original = Template.prepare_generate_kwargs

    def prepare_generate_kwargs(self, generate_kwargs, *, model=None):
        generate_kwargs = original(self, generate_kwargs, model=model)
        if not settings.load().constrain_masks:
            return generate_kwargs
        proc = getattr(self, "_svp_mask_processor", None)
        if proc is None:
            try:
                proc = MaskTokenLogitsProcessor.from_tokenizer(self.tokenizer)
            except ValueError:
                proc = False  # this tokenizer has no mask tokens: nothing to constrain
            self._svp_mask_processor = proc
        if proc:
            from transformers import LogitsProcessorList

            existing = generate_kwargs.get("logits_processor") or []
            generate_kwargs["logits_processor"] = LogitsProcessorList([*existing, proc])
        return generate_kwargs

    Template.prepare_generate_kwargs = prepare_generate_kwargs


def register() -> None:
    """Idempotent: patches once per process, registers the loss scale under 'mask_span'."""
    settings.load()  # validated and logged at start-up, not at the first masked sample
    swift_trainer.register()
    swift_new_rows.register()  # --tuner_type lora_new_rows: LoRA + the new tokens' rows
    swift_perception_lm.register()  # --model_type perception_lm (SAMTok's PLM-1B)
    loss_scale_map["mask_span"] = MaskSpanLossScale
    if getattr(ModelLoader, _MARK, False):
        return
    _patch_model_loader()
    _patch_generation()
    setattr(ModelLoader, _MARK, True)
