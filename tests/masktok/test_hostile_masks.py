"""Hostile segmentations and annotation files in the mask-token data tools: every one is a
named, counted skip (or a clear stop for a file that cannot be read at all), never a hang, a
memory blow-up or a segfault inside pycocotools.

The end-to-end runs go through a subprocess with a 6 GB address-space limit and a timeout:
before the checks, a NaN polygon coordinate took all 23 GB of the machine (or segfaulted
under a limit), which must fail this test, not take the test machine down."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from svp.masktok.coco import (
    SegmentationError,
    annotation_to_mask,
    decode_counts,
    mask_to_rle,
    segmentation_problem,
)
from tests.helpers import REPO, coco_fixture, offline_env

H, W = 424, 640
SQUARE = [100.0, 100.0, 200.0, 100.0, 200.0, 200.0, 100.0, 200.0]


def _with(coords: dict[int, object]) -> list:
    part = list(SQUARE)
    for i, v in coords.items():
        part[i] = v
    return [part]


@pytest.mark.parametrize(("segmentation", "kind", "says"), [
    (_with({2: float("nan")}), "not finite", "coordinate 3 is nan"),
    (_with({1: float("inf")}), "not finite", "coordinate 2 is inf"),
    (_with({4: float("-inf")}), "not finite", "-inf"),
    (_with({0: 1e12}), "far outside the image", "x = 1e+12, the image is 640x424"),
    (_with({7: -500.0}), "far outside the image", "y = -500"),
    (_with({3: "12"}), "not RLE or polygons", "coordinate 4 is '12'"),
    (_with({3: True}), "not RLE or polygons", "coordinate 4 is True"),
    ([SQUARE + [1.0]], "not RLE or polygons", "odd number of coordinates"),
    ([{"x": 1}], "not RLE or polygons", "polygon 1 is a dict"),
    (None, "not RLE or polygons", "segmentation is null"),
    ("M 1 2", "not RLE or polygons", "segmentation is a str"),
    ({"size": [10, 10], "counts": [100]}, "RLE size", "RLE of 10x10 for a 640x424 image"),
    ({"size": [H, W], "counts": [5, 10]}, "RLE counts", "cover 15 pixels"),
    ({"size": [H, W], "counts": [H * W + 5, -5]}, "RLE counts", "non-negative"),
    ({"size": [H, W], "counts": "oooo"}, "RLE counts", "ends inside a value"),
    ({"size": [H, W], "counts": "zzzz"}, "RLE counts", "character 'z' at 0 is not RLE"),
    ({"size": [H, W], "counts": "!!"}, "RLE counts", "not RLE"),
    ({"size": [H, W], "counts": "0000"}, "RLE counts", "cover 0 pixels"),
    ({"size": "424x640", "counts": "00"}, "RLE size", "not [height, width]"),
])
def test_unusable_segmentations_are_named(segmentation, kind, says):
    problem = segmentation_problem(segmentation, H, W)
    assert isinstance(problem, SegmentationError) and problem.kind == kind, problem
    assert says in str(problem), str(problem)
    with pytest.raises(SegmentationError):
        annotation_to_mask(segmentation, H, W)


def test_real_segmentations_still_pass():
    inst = json.loads(coco_fixture().read_text())
    for ann in inst["annotations"]:
        assert segmentation_problem(ann["segmentation"], H, W) is None
        assert annotation_to_mask(ann["segmentation"], H, W).any()
    # a point a little outside the border (COCO has such) and a short part are fine
    assert segmentation_problem([SQUARE, [1.0, 2.0]], H, W) is None
    assert segmentation_problem(_with({0: -3.5, 5: H + 2.0}), H, W) is None


def test_compressed_counts_decode_as_pycocotools_encodes_them():
    """Our decoder of the compressed string against pycocotools' encoder: the runs cover the
    picture and rebuild the mask exactly (random masks, empty and full ones)."""
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) > p for p in (0.0, 0.3, 0.5, 0.9, 1.1)]
    masks.append(np.zeros((5, 5), bool))
    for m in masks:
        rle = mask_to_rle(m)
        runs = decode_counts(rle["counts"])
        assert sum(runs) == m.size and all(r >= 0 for r in runs)
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
        assert np.array_equal(flat.reshape(m.shape[1], m.shape[0]).T, m)
        assert np.array_equal(annotation_to_mask(rle, *m.shape), m)


def _limited():
    limit = 6 * 1024 ** 3  # torch alone reserves about 3.2 GB of address space
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "data_tools" / name), *args],
                          capture_output=True, text=True, env=offline_env(), timeout=300,
                          preexec_fn=_limited)


@pytest.fixture()
def hostile_gres(tmp_path, trained_codec):
    """The real COCO sample with one ref per kind of bad annotation, plus a good one."""
    inst = json.loads(coco_fixture().read_text())
    good = inst["annotations"]
    bad = {901: _with({2: float("nan")}), 902: _with({0: float("inf")}),
           903: _with({0: 1e15}), 904: None, 905: "polygon",
           906: {"size": [10, 10], "counts": [100]}}
    inst["annotations"] = good + [dict(good[0], id=i, segmentation=s) for i, s in bad.items()]
    (tmp_path / "instances.json").write_text(json.dumps(inst))  # NaN/Infinity, as Python writes
    refs = [{"ref_id": 1, "image_id": 98304, "split": "val", "ann_id": [108703],
             "sentences": [{"sent_id": 0, "sent": "front black chair"}]}]
    refs += [{"ref_id": 10 + k, "image_id": 98304, "split": "val", "ann_id": [108703, i],
              "sentences": [{"sent_id": 0, "sent": f"thing {i}"},
                            {"sent_id": 1, "sent": f"other {i}"}]}
             for k, i in enumerate(bad)]
    (tmp_path / "grefs.json").write_text(json.dumps(refs))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (W, H), (90, 80, 70)).save(tmp_path / "images" /
                                                "COCO_train2014_000000098304.jpg")
    return tmp_path, f"builtin:{trained_codec[0]}"


def test_tokenize_gres_skips_and_names_bad_annotations(hostile_gres):
    root, codec = hostile_gres
    proc = _tool("tokenize_gres.py", "--grefs", str(root / "grefs.json"), "--instances",
                 str(root / "instances.json"), "--image-root", str(root / "images"),
                 "--split", "val", "--codec", codec, "--out", str(root / "out"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((root / "out" / "gres_val.summary.json").read_text())
    assert summary["written"] == 1 and summary["sentences"] == 1
    assert summary["skipped: bad segmentation (not finite)"] == 4
    assert summary["skipped: bad segmentation (far outside the image)"] == 2
    assert summary["skipped: bad segmentation (not RLE or polygons)"] == 4
    assert summary["skipped: bad segmentation (RLE size)"] == 2
    for ann_id, reason in ((901, "coordinate 3 is nan"), (904, "segmentation is null"),
                           (906, "RLE of 10x10 for a 640x424 image")):
        assert f"annotation {ann_id} of {root / 'instances.json'}: " in proc.stderr
        assert reason in proc.stderr
    assert "ref 10 (2 sentences)" in proc.stderr

    # the evaluator stops on such ground truth rather than scoring without those refs
    pred = root / "pred.jsonl"
    pred.write_text(json.dumps({"id": "gres:val:1:0", "response": "No target."}) + "\n")
    proc = _tool("eval_gres.py", "--pred", str(pred), "--grefs", str(root / "grefs.json"),
                 "--instances", str(root / "instances.json"), "--split", "val",
                 "--image-root", str(root / "images"), "--codec", codec,
                 "--out", str(root / "eval.json"))
    assert proc.returncode != 0
    assert "6 ground-truth refs have an unusable segmentation" in proc.stderr


def test_gres_file_that_is_not_utf8_names_its_line(hostile_gres):
    root, codec = hostile_gres
    text = (root / "grefs.json").read_text().replace("}, {", "},\n{")
    lines = text.split("\n")
    lines[3] = lines[3].replace("thing", "th\udcffing")
    (root / "grefs.json").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    proc = _tool("tokenize_gres.py", "--grefs", str(root / "grefs.json"), "--instances",
                 str(root / "instances.json"), "--image-root", str(root / "images"),
                 "--codec", codec, "--out", str(root / "out"))
    assert proc.returncode == 2
    assert f"{root / 'grefs.json'}: line 4: not UTF-8 (byte 0xff" in proc.stderr


def test_tokenize_dam_skips_and_names_bad_masks_and_lines(hostile_gres):
    root, codec = hostile_gres
    inst = json.loads(coco_fixture().read_text())
    chair = next(a for a in inst["annotations"] if a["id"] == 108703)["segmentation"]
    name = "COCO_train2014_000000098304.jpg"
    rows = [
        json.dumps({"image": name, "mask": chair, "caption": "A black chair."}).encode(),
        b'{"image": "x.jpg", "mask": [[1, 2, 3', b"",
        json.dumps({"image": name, "mask": _with({2: float("nan")}), "caption": "nan"}).encode(),
        json.dumps({"image": name, "regions": [
            {"mask": {"size": [H, W], "counts": "zzzz"}, "caption": "garbage RLE"},
            {"mask": _with({1: -1e9}), "caption": "far away"}]}).encode(),
        '{"image": "é.jpg", "caption": "latin-1"}'.encode("latin-1"),
        b"[1, 2]",
    ]
    ann = root / "dam.jsonl"
    ann.write_bytes(b"\n".join(rows) + b"\n")
    proc = _tool("tokenize_dam.py", "--annotations", str(ann), "--image-root",
                 str(root / "images"), "--codec", codec, "--out", str(root / "dam"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((root / "dam" / "dam.summary.json").read_text())
    assert summary["written"] == 1
    assert summary["skipped: unreadable row"] == 3
    assert summary["skipped: bad mask (not finite)"] == 1
    assert summary["skipped: bad mask (RLE counts)"] == 1
    assert summary["skipped: bad mask (far outside the image)"] == 1
    err = proc.stderr
    assert f"{ann}: line 2: invalid JSON at column" in err
    assert f"{ann}: line 6: not UTF-8 (byte 0xe9 at column 12)" in err
    assert f"{ann}: line 7: expected an object, got list" in err
    assert "skipped: line 4: not finite: polygon 1 coordinate 3 is nan" in err
    assert "skipped: line 5.1: RLE counts:" in err and "skipped: line 5.2: far outside" in err
