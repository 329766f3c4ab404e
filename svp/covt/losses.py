"""CoVT expert losses as upstream defines them (``AnchorLoss`` in ``covt_qwen2_5_vl.py``),
batched and shape-safe.

SAM: Hungarian matching of the k predicted masks to the expert's masks on cost 1 - dice
(dice smoothing 1e-6, no grad), matched pairs ``(1 - dice) + BCE``, unmatched predictions
``0.1 * BCE(pred, 0)``; an image where the expert found no mask contributes 0 (upstream's
``if num_masks == 0: return 0.0``), or with ``empty="background"`` (ours, a named option)
``BCE(all, 0)``; mean over the batch. Depth: L1 on the decoded map. DINO /
SigLIP / MetaCLIP: MSE on features. Edge: L1 on sigmoid maps. Upstream's per-expert scales
(depth 0.005, DINO 0.5, SigLIP/MetaCLIP 5) are the defaults of :data:`SCALES`.

Differences from upstream, on purpose: predictions and targets must have the same shape
(upstream broadcast ``[B,1,H,W]`` against ``[B,H,W]``, right only with batch 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALES = {"sam": 1.0, "depth": 0.005, "dino": 0.5, "pidinet": 1.0, "siglip": 5.0,
          "metaclip": 5.0}


def _same_shape(pred, target, name):
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction {tuple(pred.shape)} vs target "
                         f"{tuple(target.shape)}")


DICE_EPS = 1e-6  # upstream's dice_coeff
SAM_EMPTY = ("zero", "background")


def dice_scores(prob: torch.Tensor, gt: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Pairwise dice [k, m] between k probability maps and m binary masks (flattened)."""
    p = prob.flatten(1)
    g = gt.flatten(1).to(p.dtype)
    inter = p @ g.T
    return (2 * inter + eps) / (p.sum(1)[:, None] + g.sum(1)[None, :] + eps)


def sam_loss(logits: torch.Tensor, gt_masks: torch.Tensor, n_masks: torch.Tensor,
             unmatched_weight: float = 0.1, empty: str = "zero") -> torch.Tensor:
    """``logits`` [B, k, H, W]; ``gt_masks`` [B, M, H, W] (first ``n_masks[b]`` valid).
    ``empty``: what an image without expert masks contributes (``zero``: upstream's 0, kept
    in the graph so every rank's heads take part; ``background``: ``BCE(all, 0)``)."""
    from scipy.optimize import linear_sum_assignment

    if empty not in SAM_EMPTY:
        raise ValueError(f"sam: unknown empty-mask rule {empty!r} (one of {SAM_EMPTY})")
    if logits.shape[0] != gt_masks.shape[0] or logits.shape[-2:] != gt_masks.shape[-2:]:
        raise ValueError(f"sam: logits {tuple(logits.shape)} vs masks {tuple(gt_masks.shape)}")
    losses = []
    for b in range(logits.shape[0]):
        pred, m = logits[b], int(n_masks[b])
        if m == 0:
            losses.append(F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred))
                          if empty == "background" else 0.0 * pred.sum())
            continue
        gt = gt_masks[b, :m].to(pred.dtype)
        with torch.no_grad():
            cost = (1 - dice_scores(pred.sigmoid(), gt)).float().cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        rows_t = torch.as_tensor(rows, device=pred.device)
        cols_t = torch.as_tensor(cols, device=pred.device)
        matched, target = pred[rows_t], gt[cols_t]
        dice = torch.diagonal(dice_scores(matched.sigmoid(), target))
        loss = (1 - dice.mean()) + F.binary_cross_entropy_with_logits(matched, target)
        rest = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
        rest[rows_t] = False
        if rest.any():
            loss = loss + unmatched_weight * F.binary_cross_entropy_with_logits(
                pred[rest], torch.zeros_like(pred[rest]))
        losses.append(loss)
    return torch.stack(losses).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor, name: str = "l1") -> torch.Tensor:
    _same_shape(pred, target, name)
    return F.l1_loss(pred, target)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, name: str = "mse") -> torch.Tensor:
    _same_shape(pred, target, name)
    return F.mse_loss(pred, target)
