"""GRES metrics exactly as the official gRefCOCO evaluator (ReLA ``refer_evaluation.py``) counts.

Per sample, the prediction is the union of all predicted masks and the target the union of
all target masks. A sample is *no-target* when its expression refers to nothing.

- No-target sample, predicted empty ("no mask tokens"): true positive for N-acc; its IoU
  counts as 1 and it adds nothing to the cumulative I and U.
- No-target sample, something predicted: false negative; IoU 0; adds its U (the predicted
  area) to the cumulative U.
- Targeted sample: I and U of prediction vs target are accumulated and its IoU = I / U; a
  prediction of "no target" is a false positive for T-acc (I = 0, U = target area),
  anything else a true negative.

gIoU = mean per-sample IoU; cIoU = sum I / sum U; N-acc = TP / (TP + FN) over no-target
samples; T-acc = TN / (TN + FP) over targeted samples; Pr@t = share of targeted samples
with IoU >= t. All reported in percent. Where a denominator is empty the metric is ``None``
(the official script prints 0 for N-acc/T-acc then, which reads as a real score).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

PR_THRESHOLDS = (0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SampleScore:
    """What one sample contributes; kept per sample for the JSON report."""

    id: str
    no_target: bool  # ground truth refers to nothing
    pred_no_target: bool  # the model emitted no mask
    intersection: int
    union: int
    iou: float

    def to_dict(self) -> dict:
        return asdict(self)


def score_sample(sample_id: str, pred: np.ndarray | None, target: np.ndarray | None,
                 pred_no_target: bool | None = None, no_target: bool | None = None
                 ) -> SampleScore:
    """Score one sample. ``pred``/``target`` are HxW masks (any dtype, nonzero = in) or None.

    ``pred_no_target`` defaults to "pred is None or empty" and ``no_target`` to "target is
    None or empty"; pass them explicitly when the answer said ``No target.`` but a mask was
    still decoded, or the reverse.
    """
    shape = next((np.shape(x) for x in (target, pred) if x is not None), (0,))
    t = np.zeros(shape, bool) if target is None else np.asarray(target).astype(bool)
    p = np.zeros(shape, bool) if pred is None else np.asarray(pred).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"sample {sample_id}: prediction {p.shape} vs target {t.shape}")
    if no_target is None:
        no_target = not t.any()
    if pred_no_target is None:
        pred_no_target = not p.any()
    if pred_no_target:
        p = np.zeros_like(t)
    inter = int(np.logical_and(p, t).sum())
    union = int(np.logical_or(p, t).sum())
    if no_target:
        if pred_no_target:
            return SampleScore(sample_id, True, True, 0, 0, 1.0)
        return SampleScore(sample_id, True, False, 0, union, 0.0)
    iou = 0.0 if union == 0 else inter / union
    return SampleScore(sample_id, False, bool(pred_no_target), inter, union, iou)


def gres_metrics(scores: Iterable[SampleScore], thresholds: Iterable[float] = PR_THRESHOLDS
                 ) -> dict[str, float | int | None]:
    """Aggregate per-sample scores into gIoU, cIoU, N-acc, T-acc and Pr@t for each of
    ``thresholds`` (GRES papers report 0.7/0.8/0.9, RefCOCO papers Pr@0.5)."""
    scores = list(scores)
    n = len(scores)
    targeted = [s for s in scores if not s.no_target]
    empty = [s for s in scores if s.no_target]
    tp = sum(s.pred_no_target for s in empty)
    fn = len(empty) - tp
    fp = sum(s.pred_no_target for s in targeted)
    tn = len(targeted) - fp
    sum_i = sum(s.intersection for s in scores)
    sum_u = sum(s.union for s in scores)

    def pct(num: float, den: float) -> float | None:
        return None if den == 0 else 100.0 * num / den

    out: dict[str, float | int | None] = {
        "gIoU": pct(sum(s.iou for s in scores), n),
        "cIoU": pct(sum_i, sum_u),
        "N-acc": pct(tp, tp + fn),
        "T-acc": pct(tn, tn + fp),
    }
    for thr in thresholds:
        out[f"Pr@{thr:.1f}"] = pct(sum(s.iou >= thr for s in targeted), len(targeted))
    out.update(samples=n, targeted=len(targeted), no_target=len(empty),
               TP=tp, FN=fn, FP=fp, TN=tn)
    return out


def format_metrics(metrics: dict) -> str:
    """One table row per metric, as the eval CLI prints it."""
    lines = []
    for key in ("gIoU", "cIoU", "N-acc", "T-acc", *(f"Pr@{t:.1f}" for t in PR_THRESHOLDS)):
        val = metrics.get(key)
        lines.append(f"{key:<7} {'n/a' if val is None else f'{val:6.2f}'}")
    lines.append(f"samples {metrics['samples']} (targeted {metrics['targeted']}, "
                 f"no-target {metrics['no_target']}; TP {metrics['TP']} FN {metrics['FN']} "
                 f"FP {metrics['FP']} TN {metrics['TN']})")
    return "\n".join(lines)
