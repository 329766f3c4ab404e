"""NEO's weighted next-token loss (upstream: the weighted loss of
VLMTrainKit/neo/model/modeling_neo_qwen3.py), as pure functions.

Every supervised token of sample s weighs ``w(n_s)`` with n_s its count of labels != -100
(counted before the shift): ``token`` 1 (plain token mean), ``sample`` 1/n (each sample's mean
counts equally), ``square`` 1/sqrt(n) (upstream's default). The loss of one micro-batch (one
packed row) is ``sum(w * ce) / max(sum(w), 1e-5)`` with labels shifted exactly once; upstream
shifted twice before its commit 78faae9.
"""

from __future__ import annotations

import math

import torch

REDUCTIONS = ("token", "sample", "square")


def len2weight(n: int, reduction: str) -> float:
    """The per-token weight of a sample with ``n`` supervised tokens."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction {reduction!r} not in {REDUCTIONS}")
    if n <= 0:
        return 0.0
    return {"token": 1.0, "sample": 1.0 / n, "square": 1.0 / math.sqrt(n)}[reduction]


def sample_weights(labels: list[int], reduction: str) -> list[float]:
    """Per-token weights of one sample: ``len2weight(n)`` where the label is supervised, 0
    elsewhere."""
    n = sum(1 for x in labels if x != -100)
    w = len2weight(n, reduction)
    return [w if x != -100 else 0.0 for x in labels]


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum(w * ce) / max(sum(w), 1e-5)`` over ``[B, L, V]`` logits and ``[B, L]`` labels,
    shifting once (position i predicts label i + 1). Without weights: the token mean."""
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    if weights is None:
        weights = (labels != -100).float()
    w = weights[:, 1:].float() * (target != -100)
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
        reduction="none").view_as(w)
    return (w * ce).sum() / w.sum().clamp_min(1e-5)


def supervised_lm_loss(hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`weighted_lm_loss` computed from the hidden states, projecting only the
    positions whose next label is supervised: full-vocabulary logits of a 32k-token row are
    ~10 GB in bf16 (and twice that as the float32 copy), almost all of them prompt and
    image positions that weigh zero. The same value, the same gradients."""
    target = labels[:, 1:]
    keep = target != -100
    if weights is None:
        weights = (labels != -100).float()
    w = weights[:, 1:][keep].float()
    logits = lm_head(hidden[:, :-1][keep]).float()
    ce = torch.nn.functional.cross_entropy(logits, target[keep], reduction="none")
    return (w * ce).sum() / w.sum().clamp_min(1e-5)
