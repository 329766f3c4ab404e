"""data_tools/visualize.py and the drawing helpers it uses (svp/common/overlay.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_tools import visualize
from svp.common.overlay import (
    BOX_COLOURS,
    _boundary,
    contact_sheet,
    crop_chain,
    mask_overlay,
)
from svp.masktok.coco import mask_to_rle

GREEN, RED = (0, 255, 0), (255, 0, 0)


def test_boundary_is_the_outline_only():
    m = np.zeros((8, 8), bool)
    m[2:6, 2:6] = True
    b = _boundary(m)
    assert b.sum() == 12 and not b[3:5, 3:5].any() and b[2, 2] and b[5, 5]
    assert _boundary(np.ones((3, 3), bool)).sum() == 8  # the image edge counts as outside


def test_mask_overlay_outlines_truth_and_prediction_in_pure_colours():
    img = Image.new("RGB", (40, 20), (0, 0, 200))  # a blue object: fills alone would blur
    t = np.zeros((20, 40), bool)
    t[5:15, 5:15] = True
    p = np.zeros((20, 40), bool)
    p[5:15, 20:30] = True
    out = np.asarray(mask_overlay(img, t, p, min_width=40))
    assert out.shape == (20, 120, 3)
    assert tuple(out[5, 5]) == GREEN and tuple(out[5, 20]) == RED          # both panel
    assert tuple(out[5, 45]) == GREEN and tuple(out[5, 60]) == (0, 0, 200)  # truth panel
    assert tuple(out[5, 100]) == RED                                        # prediction
    assert tuple(out[10, 10]) != GREEN and out[10, 10, 1] > out[10, 10, 0]  # filled, tinted


def test_crop_chain_draws_each_box_and_appends_its_crop():
    img = Image.new("RGB", (200, 100), (128, 128, 128))
    boxes = [(0, 0, 100, 50), (100, 50, 200, 100)]
    crops = [img.crop(b) for b in boxes]
    one = crop_chain(img, boxes[:1], crops[:1], "A: red", height=100)
    two = crop_chain(img, boxes, crops, "A: red", notes=["invalid call 'x': bad"], height=100)
    assert two.width > one.width > 200
    px = np.asarray(two)
    assert tuple(px[0, 50]) == BOX_COLOURS[0]           # top edge of box 1 on the picture
    assert tuple(px[99, 150]) == BOX_COLOURS[1]         # bottom edge of box 2 (scale 1)
    assert two.height > one.height                      # the note got a line


def test_contact_sheet_grid_and_empty():
    tiles = [Image.new("RGB", (100, 50), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    sheet = contact_sheet(tiles, ["a", "b", "c"], cols=2)
    assert sheet.width == 8 + 2 * (100 + 8)
    assert sheet.height == 8 + 2 * (50 + 18 + 8)
    with pytest.raises(ValueError, match="no tiles"):
        contact_sheet([])


def _gres_files(tmp_path):
    img = Image.new("RGB", (32, 24), (90, 90, 90))
    img.save(tmp_path / "a.png")
    target = np.zeros((24, 32), bool)
    target[4:12, 4:12] = True
    gt = {"id": "gres:val:1:10", "image": "a.png", "no_target": False,
          "target_rle": mask_to_rle(target),
          "conversations": [{"from": "human", "value": "<image>the box"},
                            {"from": "gpt", "value": "..."}]}
    (tmp_path / "gt.jsonl").write_text(json.dumps(gt) + "\n")
    return target


def test_masks_from_eval_results(tmp_path, capsys):
    target = _gres_files(tmp_path)
    pred = np.zeros_like(target)
    pred[4:12, 8:16] = True
    res = {"metrics": {}, "samples": [
        {"id": "gres:val:1:10", "iou": 0.33, "n_pred_masks": 1, "pred_rle": mask_to_rle(pred)},
        {"id": "gres:val:9:90", "iou": 0.0, "n_pred_masks": 0, "pred_rle": mask_to_rle(pred)}]}
    (tmp_path / "r.json").write_text(json.dumps(res))
    rc = visualize.main(["masks", "--results", str(tmp_path / "r.json"), "--gt",
                         str(tmp_path / "gt.jsonl"), "--image-root", str(tmp_path),
                         "--out", str(tmp_path / "vis")])
    assert rc == 0
    tile = np.asarray(Image.open(tmp_path / "vis" / "gres_val_1_10.png"))
    factor = tile.shape[1] // (3 * 32)
    assert tuple(tile[4 * factor, 4 * factor]) == GREEN    # truth outline, both panel
    assert tuple(tile[11 * factor, 15 * factor]) == RED    # prediction outline
    assert (tmp_path / "vis" / "sheet.png").is_file()
    captured = capsys.readouterr()
    assert "skipped 1" in captured.out and "gres:val:9:90: not in" in captured.err


def test_masks_refuses_results_without_predicted_masks(tmp_path):
    _gres_files(tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({"samples": [{"id": "x", "iou": 1.0}]}))
    with pytest.raises(SystemExit, match="no per-sample 'pred_rle'.*eval_gres.py"):
        visualize.main(["masks", "--results", str(tmp_path / "r.json"), "--gt",
                        str(tmp_path / "gt.jsonl"), "--image-root", str(tmp_path), "--out",
                        str(tmp_path / "vis")])


def test_crops_needs_the_matching_batch_file_and_counts_unreadable(tmp_path, capsys):
    img = Image.new("RGB", (64, 48), (50, 50, 50))
    img.save(tmp_path / "a.png")
    img.crop((0, 0, 32, 24)).save(tmp_path / "c0.png")
    ok = {"text": "<tool_call>[0, 0, 32, 24]</tool_call><image> red", "answer": "red",
          "tool_calls": [{"box_model": [0, 0, 32, 24], "box_pixels": [0, 0, 32, 24]}],
          "invalid_calls": [], "crops": [str(tmp_path / "c0.png")], "finished": True}
    lost = {**ok, "crops": [str(tmp_path / "gone.png")]}
    (tmp_path / "res.json").write_text(json.dumps([ok, lost]))
    row = {"image": str(tmp_path / "a.png"), "question": "colour?", "bbox": [2, 2, 20, 20]}
    (tmp_path / "one.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match="has 1 rows but .* 2 results"):
        visualize.main(["crops", "--results", str(tmp_path / "res.json"), "--batch_file",
                        str(tmp_path / "one.jsonl"), "--out", str(tmp_path / "vis")])
    (tmp_path / "two.jsonl").write_text((json.dumps(row) + "\n") * 2)
    assert visualize.main(["crops", "--results", str(tmp_path / "res.json"), "--batch_file",
                           str(tmp_path / "two.jsonl"), "--out", str(tmp_path / "vis")]) == 0
    assert (tmp_path / "vis" / "sample0.png").is_file()
    assert not (tmp_path / "vis" / "sample1.png").exists()
    assert "skipped 1" in capsys.readouterr().out


def test_thoughts_sheet_and_an_answer_without_tokens(tmp_path):
    panel = tmp_path / "x_sam.png"
    Image.new("RGB", (300, 100), (10, 10, 10)).save(panel)
    dec = {"experts": {"sam": {"png": str(panel), "loss": 1.2, "zero_token_loss": 1.5}}}
    (tmp_path / "decoded.json").write_text(json.dumps(dec))
    assert visualize.main(["thoughts", "--decoded", str(tmp_path / "decoded.json"), "--out",
                           str(tmp_path / "t.png")]) == 0
    assert Image.open(tmp_path / "t.png").width == 300 + 16
    (tmp_path / "none.json").write_text(json.dumps({"experts": {}, "missing": ["sam"]}))
    with pytest.raises(SystemExit, match="no decoded expert.*sam"):
        visualize.main(["thoughts", "--decoded", str(tmp_path / "none.json"), "--out",
                        str(tmp_path / "u.png")])
