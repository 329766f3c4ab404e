"""GRES metrics on hand-computed cases (the official evaluator's counting)."""

from __future__ import annotations

import numpy as np
import pytest

from svp.masktok.gres_metrics import format_metrics, gres_metrics, score_sample


def box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def test_no_target_correctly_empty_scores_one_and_adds_nothing():
    s = score_sample("a", None, np.zeros((4, 4)))
    assert (s.no_target, s.pred_no_target, s.intersection, s.union, s.iou) == \
        (True, True, 0, 0, 1.0)


def test_no_target_with_a_prediction_is_fn_and_adds_its_area():
    s = score_sample("a", box(4, 4, 0, 2, 0, 2), np.zeros((4, 4)))
    assert (s.no_target, s.pred_no_target, s.intersection, s.union, s.iou) == \
        (True, False, 0, 4, 0.0)


def test_targeted_predicted_empty_is_fp_with_target_area():
    s = score_sample("a", None, box(4, 4, 0, 4, 0, 1))
    assert (s.no_target, s.pred_no_target, s.intersection, s.union, s.iou) == \
        (False, True, 0, 4, 0.0)


def test_no_target_answer_with_a_decoded_mask_still_counts_as_no_target():
    """'No target.' parsed -> pred_no_target, whatever pixels a decoder might give."""
    s = score_sample("a", box(4, 4, 0, 2, 0, 2), box(4, 4, 0, 2, 0, 2), pred_no_target=True)
    assert (s.intersection, s.union, s.iou) == (0, 4, 0.0)


def test_hand_computed_dataset():
    h = w = 10
    gt = box(h, w, 0, 10, 0, 5)  # 50 px
    samples = [
        score_sample("hit", box(h, w, 0, 10, 0, 4), gt),          # I 40 U 50 IoU .8
        score_sample("half", box(h, w, 0, 10, 0, 10), gt),        # I 50 U 100 IoU .5
        score_sample("miss", None, gt),                           # FP: I 0 U 50 IoU 0
        score_sample("nt_ok", None, None),                        # TP: IoU 1, adds nothing
        score_sample("nt_bad", box(h, w, 0, 1, 0, 10), np.zeros((h, w))),  # FN: U 10
        score_sample("exact", gt, gt),                            # I 50 U 50 IoU 1
    ]
    m = gres_metrics(samples)
    assert m["gIoU"] == pytest.approx(100 * (0.8 + 0.5 + 0 + 1 + 0 + 1) / 6)
    assert m["cIoU"] == pytest.approx(100 * (40 + 50 + 0 + 0 + 0 + 50) / (50 + 100 + 50 + 10 + 50))
    assert m["N-acc"] == pytest.approx(50.0)  # TP 1, FN 1
    assert m["T-acc"] == pytest.approx(75.0)  # TN 3, FP 1
    # targeted IoUs: .8 .5 0 1 -> >=.7: 2, >=.8: 2 (boundary counts), >=.9: 1
    assert m["Pr@0.7"] == pytest.approx(50.0)
    assert m["Pr@0.8"] == pytest.approx(50.0)
    assert m["Pr@0.9"] == pytest.approx(25.0)
    assert (m["TP"], m["FN"], m["FP"], m["TN"]) == (1, 1, 1, 3)
    text = format_metrics(m)
    assert "gIoU     55.00" in text and "no-target 2" in text


def test_empty_denominators_are_none_not_zero():
    only_targeted = gres_metrics([score_sample("a", box(2, 2, 0, 1, 0, 1), box(2, 2, 0, 1, 0, 1))])
    assert only_targeted["N-acc"] is None and only_targeted["T-acc"] == 100.0
    only_empty = gres_metrics([score_sample("a", None, np.zeros((2, 2)))])
    assert only_empty["cIoU"] is None  # sum U = 0
    assert only_empty["gIoU"] == 100.0 and only_empty["Pr@0.7"] is None
    assert gres_metrics([])["gIoU"] is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sample x"):
        score_sample("x", np.ones((2, 3)), np.ones((3, 2)))
