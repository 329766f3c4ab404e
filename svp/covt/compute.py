"""From a batch's last hidden states to the weighted CoVT auxiliary loss (no ms-swift here).

Positions come from ``input_ids == <expert pad id>`` (labels may be compressed by
``logits_to_keep`` in ms-swift's trainer), in prompt or answer alike, with no shift (as
upstream's ``covt_qwen2_5_vl.py`` forward). A sample contributes to an expert's loss when it holds
a complete group of that expert's pads and has targets; a group cut by truncation is
counted, never silently read. Each expert's loss is the mean over its contributing
samples, times its weight and upstream scale.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from svp.covt.losses import SCALES


def thought_positions(input_ids: torch.Tensor, pad_id: int, n: int
                      ) -> tuple[list[int], torch.Tensor, list[int]]:
    """Rows holding >= ``n`` pads of ``pad_id`` and the first ``n`` positions of each
    ([rows, n]); plus the rows holding 1..n-1 pads (an incomplete group)."""
    mask = input_ids == pad_id
    counts = mask.sum(1).tolist()
    rows = [r for r, c in enumerate(counts) if c >= n]
    short = [r for r, c in enumerate(counts) if 0 < c < n]
    if not rows:
        return [], torch.zeros(0, n, dtype=torch.long, device=input_ids.device), short
    pos = torch.stack([mask[r].nonzero()[:n, 0] for r in rows])
    return rows, pos, short


def stack_targets(per_sample: list[dict[str, torch.Tensor]], device) -> dict[str, torch.Tensor]:
    """Per-sample target dicts (no batch dim) -> one batched dict on ``device``."""
    keys = per_sample[0].keys()
    return {k: torch.stack([t[k] for t in per_sample]).to(device) for k in keys}


@dataclass
class AuxResult:
    total: torch.Tensor | None = None          # weighted sum (None: nothing to supervise)
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted, per expert
    samples: Counter = field(default_factory=Counter)  # per expert: samples supervised
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def covt_losses(hidden: torch.Tensor, input_ids: torch.Tensor, pad_ids: dict[str, int],
                heads, experts: dict, targets: list[dict | None],
                weights: dict[str, float] | None = None) -> AuxResult:
    """Aux losses of a batch. ``hidden`` [B, T, H] (last layer, post-norm); ``targets[b]``
    maps expert -> that sample's targets (no batch dim), or is None (no image)."""
    out = AuxResult()
    weights = weights or {}
    for name, expert in experts.items():
        rows, pos, short = thought_positions(input_ids, pad_ids[name], expert.n_tokens)
        if short:
            out.skipped[f"{name}: incomplete token group (truncated?)"] += len(short)
        keep = [(r, p) for r, p in zip(rows, pos, strict=True)
                if targets[r] is not None and name in targets[r]]
        if len(keep) < len(rows):
            out.skipped[f"{name}: no image / targets"] += len(rows) - len(keep)
        if not keep:
            continue
        idx = torch.tensor([r for r, _ in keep], device=hidden.device)
        p = torch.stack([q for _, q in keep]).to(hidden.device)
        h = hidden[idx[:, None], p]                       # [b, n, H]
        z = heads(name, h).float()
        t = stack_targets([targets[r][name] for r, _ in keep], z.device)
        loss = expert.loss(expert.decode(z, t), t)
        out.parts[name] = loss
        out.samples[name] = len(keep)
        term = weights.get(name, 1.0) * SCALES[name] * loss
        out.total = term if out.total is None else out.total + term
    return out


def idle_heads_term(heads, names: list[str], like: torch.Tensor) -> torch.Tensor | None:
    """``0 x`` the output of every head in ``names`` on a zero input shaped like ``like``
    ([.., H]): the heads a batch did not supervise still take part in the step.

    In a distributed step every rank must use the same parameters: DDP's reducer waits for
    a gradient of each parameter (or fails with "Expected to have finished reduction" when a
    head is skipped on one rank), and ZeRO reduces every partition. A batch without a group
    of some expert (text-only rows, the efficient stage's subsets, after ``aux_until``)
    therefore runs that head on zeros with weight 0: gradients of exactly 0, all ranks alike.
    """
    total = None
    for name in names:
        n = heads.input_width(name) if hasattr(heads, "input_width") else 1
        zero = like.new_zeros(1, n, like.shape[-1])
        term = 0.0 * heads(name, zero).float().sum()
        total = term if total is None else total + term
    return total


def aux_factor(loss_scaled_for_ga: bool, ga_steps: int, tokens_averaged_across_devices: bool,
               world_size: int) -> float:
    """Factor that makes a per-micro-batch mean aux loss weigh as the LM loss does.

    When the trainer's LM loss is already a share of the accumulation window's token mean
    (``num_items_in_batch`` given), the trainer does not divide by the accumulation steps,
    so the aux mean must be; when it multiplies the loss by the world size (tokens averaged
    across devices), the aux mean must be divided by it, leaving DDP's gradient mean.
    """
    f = 1.0 / ga_steps if loss_scaled_for_ga else 1.0
    if tokens_averaged_across_devices:
        f /= world_size
    return f
