"""The referring-segmentation scorer: cIoU / gIoU / Pr@0.5 by hand on known masks, and equal
to ``data_tools/eval_gres.py`` on the same answers (masks decoded by the same codec)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from svp.masktok.gres_data import GresSample
from svp.serve.results import masks_field
from tests.helpers import REPO, offline_env


def _box(h, w, x1, y1, x2, y2) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


def _sample(ref_id, box, no_target=False) -> GresSample:
    x1, y1, x2, y2 = box
    return GresSample(ref_id=ref_id, sent_id=0, image_id=1, file_name="x.jpg", width=40,
                      height=30, sentence="the box", ann_ids=[] if no_target else [ref_id],
                      segmentations=[] if no_target else [[[x1, y1, x2, y1, x2, y2, x1, y2]]],
                      crowd=[] if no_target else [False])


def _field(*masks) -> dict:
    """The ``svp`` field a mask server returns for these decoded masks."""
    from svp.masktok.tokens import MaskAnswerItem

    items = [MaskAnswerItem((1, 2), f"m{i}") for i in range(len(masks))]
    return masks_field(items, np.stack(masks) if masks else np.zeros((0, 30, 40), bool))


def test_metrics_by_hand():
    from svp.evaluation.refseg import score_row, split_metrics

    h, w = 30, 40
    # a polygon (0,0)-(10,10) covers pixels 0..9: 100 of them
    a = _sample(1, (0, 0, 10, 10))
    b = _sample(2, (20, 10, 30, 20))
    c = _sample(3, (5, 5, 15, 15))
    rows = [
        score_row("a", a, "", _field(_box(h, w, 5, 0, 15, 10)), "samtok"),  # I 50, U 150
        score_row("b", b, "", _field(_box(h, w, 20, 10, 30, 20)), "samtok"),  # I = U = 100
        score_row("c", c, "", _field(), "samtok"),  # nothing: I 0, U 100
    ]
    assert [(r["intersection"], r["union"]) for r in rows] == [(50, 150), (100, 100), (0, 100)]
    m = split_metrics(rows)
    assert m["cIoU"] == pytest.approx(100 * 150 / 350)
    assert m["gIoU"] == pytest.approx(100 * (1 / 3 + 1 + 0) / 3)
    assert m["Pr@0.5"] == pytest.approx(100 / 3)
    assert m["T-acc"] == pytest.approx(200 / 3)  # c answered "no target"
    # two masks: their union is the prediction
    two = score_row("d", a, "", _field(_box(h, w, 0, 0, 5, 10), _box(h, w, 5, 0, 10, 10)),
                    "samtok")
    assert two["iou"] == 1.0 and two["n_masks"] == 2


def test_protocols_differ_only_on_an_empty_decoded_mask():
    from svp.evaluation.refseg import score_row

    empty = _sample(9, (0, 0, 0, 0), no_target=True)
    field = _field(np.zeros((30, 40), bool))  # a mask item that decodes to nothing
    assert score_row("s", empty, "", field, "samtok")["pred_no_target"] is True
    assert score_row("s", empty, "", field, "tokens")["pred_no_target"] is False


@pytest.fixture(scope="module")
def grefcoco(tmp_path_factory, trained_codec):
    """The sets on the codec's own scenes, where its decoding overlaps the targets."""
    from tests.evaluation.fixtures import refer_sets

    root = tmp_path_factory.mktemp("refer")
    return refer_sets(root / "data", root / "train2014", refs_per_split=6,
                      scenes=trained_codec[1]), root / "train2014"


@pytest.mark.parametrize("protocol", ["tokens", "samtok"])
def test_equal_to_eval_gres_on_the_same_answers(grefcoco, trained_codec, tmp_path, protocol):
    """Answers of every kind (the target's codes, another region's, a target where there is
    none, "No target.") decoded by the codec as the server decodes them: our split metrics
    equal eval_gres.py's on the same answer texts."""
    from svp.evaluation.refer import load_split, sample_id
    from svp.evaluation.refseg import score_row, split_metrics
    from svp.masktok.codec.base import load_codec
    from svp.masktok.gres_data import target_masks
    from svp.masktok.tokens import MaskAnswerItem, format_gres_answer, parse_gres_answer

    data, images = grefcoco
    codec_path, _ = trained_codec
    codec = load_codec(f"builtin:{codec_path}")
    samples, _ = load_split(data, "grefcoco", "val")
    rows = []
    for k, s in enumerate(samples):
        image = Image.open(images / s.file_name).convert("RGB")
        if s.no_target:
            masks = None if k % 2 else _box(s.height, s.width, s.width // 4, s.height // 4,
                                            s.width // 2, s.height // 2)[None]
        else:
            masks = target_masks(s) if k % 3 else np.stack([~target_masks(s).any(0)])
        text = "No target." if masks is None else format_gres_answer(
            [MaskAnswerItem(tuple(int(c) for c in codes), "it")
             for codes in codec.encode(image, masks)])
        items = parse_gres_answer(text)
        decoded = codec.decode(image, [it.codes for it in items]) if items else \
            np.zeros((0, s.height, s.width), bool)
        rows.append(score_row(sample_id("grefcoco", "val", s), s, text,
                              masks_field(items, decoded), protocol))
    ours = split_metrics(rows)
    assert 0 < ours["cIoU"] < 100 and ours["TP"] and ours["FN"]  # every kind occurred
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval_gres.json"
    subprocess.run([sys.executable, "data_tools/eval_gres.py", "--pred", str(pred),
                    "--grefs", str(data / "grefcoco" / "grefs(unc).json"),
                    "--instances", str(data / "grefcoco" / "instances.json"),
                    "--split", "val", "--image-root", str(images),
                    "--codec", f"builtin:{codec_path}", "--protocol", protocol,
                    "--out", str(out)], cwd=REPO, env=offline_env(), check=True,
                   capture_output=True)
    theirs = json.loads(out.read_text())["metrics"]
    for key in ("gIoU", "cIoU", "N-acc", "T-acc", "Pr@0.7", "Pr@0.9"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key
