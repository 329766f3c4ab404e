"""Next-token choice for NEO's own decoding loop, from a ``GenerationConfig``: greedy, or
sampling with temperature / top-k / top-p, and the repetition penalty, through transformers'
public logits processors so the semantics are HF's."""

from __future__ import annotations

import torch


class Sampler:
    def __init__(self, config):
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.do_sample = bool(config.do_sample)
        procs = LogitsProcessorList()
        penalty = getattr(config, "repetition_penalty", None)
        if penalty is not None and penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(penalty))
        if self.do_sample:
            if config.temperature is not None and config.temperature != 1.0:
                procs.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k:
                procs.append(TopKLogitsWarper(config.top_k))
            if config.top_p is not None and config.top_p < 1.0:
                procs.append(TopPLogitsWarper(config.top_p))
        self.procs = procs

    def __call__(self, history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        scores = self.procs(history, logits)
        if self.do_sample:
            return torch.multinomial(scores.softmax(-1), 1)[:, 0]
        return scores.argmax(-1)
