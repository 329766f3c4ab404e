"""tokenize_gres.py and eval_gres.py on synthetic gRefCOCO data and on the real COCO
fixture polygons."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from data_tools import eval_gres, tokenize_gres
from svp.masktok.coco import annotation_to_mask, rle_to_mask
from svp.masktok.gres_data import GresError, load_gres
from svp.masktok.tokens import parse_gres_answer
from svp.testing.synthetic import write_synthetic_gres
from tests.helpers import coco_fixture


@pytest.fixture(scope="module")
def sgres(tmp_path_factory):
    return write_synthetic_gres(tmp_path_factory.mktemp("sgres"), n_images=8, seed=0)


def tokenize(sgres, codec_path, out, *extra) -> int:
    return tokenize_gres.main([
        "--grefs", str(sgres["grefs"]), "--instances", str(sgres["instances"]),
        "--image-root", str(sgres["images"]), "--codec", f"builtin:{codec_path}",
        "--out", str(out), "--shard-size", "7", *extra])


def rows_of(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_tokenize_rows_targets_order_and_resume(sgres, trained_codec, tmp_path, capsys):
    codec_path, _ = trained_codec
    assert tokenize(sgres, codec_path, tmp_path, "--split", "train") == 0
    out = capsys.readouterr().out
    rows = rows_of(tmp_path / "gres_train.jsonl")
    samples, _ = load_gres(sgres["grefs"], sgres["instances"], "train")
    assert len(rows) == len(samples) and f"{len(rows)} rows written" in out
    summary = json.loads((tmp_path / "gres_train.summary.json").read_text())
    assert summary["written"] == len(rows)
    assert summary["no_target"] == sum(r["no_target"] for r in rows) > 0
    inst = json.loads(sgres["instances"].read_text())
    anns = {a["id"]: a for a in inst["annotations"]}
    multi = 0
    for r in rows:
        q, a = r["conversations"][0]["value"], r["conversations"][1]["value"]
        assert q.startswith("<image>\n")
        union = rle_to_mask(r["target_rle"])
        assert union.shape == (r["height"], r["width"])
        if r["no_target"]:
            assert a == "No target." and not union.any()
            continue
        items = parse_gres_answer(a)
        assert len(items) == len(r["ann_ids"]) and a.startswith("```json\n[{\"mask_2d\": \"")
        masks = [annotation_to_mask(anns[i]["segmentation"], r["height"], r["width"])
                 for i in r["ann_ids"]]
        assert np.array_equal(union, np.any(masks, axis=0))
        if len(items) > 1:
            multi += 1
            # left to right: the answer order follows the box centres' x
            centres = []
            for m in masks:
                xs = np.nonzero(m.any(0))[0]
                centres.append((xs.min() + xs.max() + 1) / 2)
            order = np.argsort(centres, kind="stable")
            codes = tokenize_gres.load_codec(f"builtin:{codec_path}").encode(
                Image.open(sgres["images"] / r["image"]), np.stack(masks))
            assert [it.codes for it in items] == [tuple(codes[i]) for i in order]
    assert multi > 0
    # resume: finished shards are not redone
    shard = next(tmp_path.glob("shards/gres_train-*/00000.jsonl"))
    shard.write_text(shard.read_text().replace("Segment", "SEGMENT"))
    assert tokenize(sgres, codec_path, tmp_path, "--split", "train") == 0
    assert shard.read_text() in (tmp_path / "gres_train.jsonl").read_text()
    reg = (tmp_path / "datasets.yaml").read_text()
    assert "gres_train:" in reg and str(sgres["images"]) in reg


def test_tokenize_counts_skips_and_limit(sgres, trained_codec, tmp_path, capsys):
    codec_path, _ = trained_codec
    images = tmp_path / "images"
    shutil.copytree(sgres["images"], images)
    first = sorted(images.iterdir())[0]
    first.unlink()
    rc = tokenize_gres.main([
        "--grefs", str(sgres["grefs"]), "--instances", str(sgres["instances"]),
        "--image-root", str(images), "--codec", f"builtin:{codec_path}", "--split", "all",
        "--out", str(tmp_path / "o"), "--limit", "12"])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "gres_all.summary.json").read_text())
    assert summary["sentences"] == 12
    assert summary["written"] + summary.get("skipped: image file missing", 0) == 12
    assert summary.get("skipped: image file missing", 0) > 0
    assert "skipped" in capsys.readouterr().out


def test_bad_gres_files_are_clear_errors(tmp_path, trained_codec, capsys):
    (tmp_path / "g.json").write_text("{}")
    (tmp_path / "i.json").write_text("{}")
    with pytest.raises(GresError, match="expected a list"):
        load_gres(tmp_path / "g.json", tmp_path / "i.json")
    rc = tokenize_gres.main(["--grefs", str(tmp_path / "nope.json"), "--instances",
                             str(tmp_path / "i.json"), "--image-root", str(tmp_path),
                             "--codec", f"builtin:{trained_codec[0]}", "--out",
                             str(tmp_path / "o")])
    assert rc == 2 and "file not found" in capsys.readouterr().err


def test_eval_oracle_answers_and_no_target_answers(sgres, trained_codec, tmp_path, capsys):
    codec_path, _ = trained_codec
    assert tokenize(sgres, codec_path, tmp_path, "--split", "val") == 0
    gt = tmp_path / "gres_val.jsonl"
    rows = rows_of(gt)
    # 1. the ground-truth answers themselves, matched by image + question (no ids)
    oracle = tmp_path / "oracle.jsonl"
    oracle.write_text("".join(json.dumps({
        "response": r["conversations"][1]["value"],
        "messages": [{"role": "user", "content": r["conversations"][0]["value"]}],
        "images": [{"path": f"/somewhere/{r['image']}"}]}) + "\n" for r in rows))
    args = ["--gt", str(gt), "--image-root", str(sgres["images"]),
            "--codec", f"builtin:{codec_path}"]
    assert eval_gres.main(["--pred", str(oracle), "--out", str(tmp_path / "o.json"),
                           "--overlays", str(tmp_path / "ov"), "--protocol", "tokens",
                           *args]) == 0
    res = json.loads((tmp_path / "o.json").read_text())
    m = res["metrics"]
    assert m["samples"] == len(rows) and m["N-acc"] == 100.0 and m["T-acc"] == 100.0
    # per-sample IoU = the codec's own reconstruction of the union, computed here directly
    codec = tokenize_gres.load_codec(f"builtin:{codec_path}")
    expected, preds = [], []
    for r in rows:
        if r["no_target"]:
            expected.append(1.0)
            preds.append(None)
            continue
        codes = [list(it.codes) for it in parse_gres_answer(r["conversations"][1]["value"])]
        pred = codec.decode(Image.open(sgres["images"] / r["image"]), codes).any(0)
        t = rle_to_mask(r["target_rle"])
        expected.append((pred & t).sum() / (pred | t).sum())
        preds.append(pred)
    assert [x["iou"] for x in res["samples"]] == pytest.approx(expected)
    # the predicted masks are kept (RLE) for data_tools/visualize.py; no-target ones empty
    for sample, pred in zip(res["samples"], preds, strict=True):
        kept = rle_to_mask(sample["pred_rle"])
        assert np.array_equal(kept, pred) if pred is not None else not kept.any()
    assert m["gIoU"] == pytest.approx(100 * np.mean(expected))
    assert len(list((tmp_path / "ov").glob("*.png"))) == min(20, len(rows))
    # SAMTok's protocol (the default): a targeted answer whose masks decode to nothing is a
    # "no target" prediction (its metric(): pred_mask.sum() < 1), not a targeted miss
    assert eval_gres.main(["--pred", str(oracle), "--out", str(tmp_path / "s.json"),
                           *args]) == 0
    samtok = json.loads((tmp_path / "s.json").read_text())
    targeted = [p for p in preds if p is not None]
    empty = sum(1 for p in targeted if not p.any())
    assert empty > 0, "the fixture must hold a targeted answer that decodes to nothing"
    assert samtok["protocol"] == "samtok"
    assert samtok["metrics"]["T-acc"] == pytest.approx(100 * (len(targeted) - empty)
                                                       / len(targeted))
    assert samtok["metrics"]["gIoU"] == pytest.approx(m["gIoU"])
    # 2. answering "No target." everywhere: N-acc 100, T-acc 0, cIoU 0
    lazy = tmp_path / "lazy.jsonl"
    lazy.write_text("".join(json.dumps({"id": r["id"], "response": "No target."}) + "\n"
                            for r in rows))
    assert eval_gres.main(["--pred", str(lazy), "--out", str(tmp_path / "l.json"), *args]) == 0
    m = json.loads((tmp_path / "l.json").read_text())["metrics"]
    n_nt = sum(r["no_target"] for r in rows)
    assert (m["N-acc"], m["T-acc"], m["cIoU"]) == (100.0, 0.0, 0.0)
    assert m["gIoU"] == pytest.approx(100.0 * n_nt / len(rows))
    assert "gIoU" in capsys.readouterr().out
    # 3. the same predictions scored against the gRefCOCO files directly (ids match)
    assert eval_gres.main(["--pred", str(lazy), "--out", str(tmp_path / "g.json"),
                           "--grefs", str(sgres["grefs"]), "--instances", str(sgres["instances"]),
                           "--split", "val", "--image-root", str(sgres["images"]),
                           "--codec", f"builtin:{codec_path}"]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["metrics"] == m


def test_coco_fixture_polygons_tokenize(trained_codec, tmp_path):
    """Real COCO polygons (image 98304, the "front black chair" is annotation 108703)."""
    inst = json.loads(coco_fixture().read_text())
    images = tmp_path / "images"
    images.mkdir()
    for im in inst["images"]:  # stand-in pictures of the recorded size
        Image.new("RGB", (im["width"], im["height"]), (90, 80, 70)).save(
            images / im["file_name"])
    refs = [
        {"ref_id": 1, "image_id": 98304, "split": "val", "ann_id": [108703],
         "sentences": [{"sent_id": 10, "sent": "front black chair"}]},
        {"ref_id": 2, "image_id": 98304, "split": "val", "ann_id": [108703, 99893],
         "sentences": [{"sent_id": 20, "sent": "the chair and the table"}]},
        {"ref_id": 3, "image_id": 98304, "split": "val", "ann_id": [-1],
         "sentences": [{"sent_id": 30, "sent": "the red car"}]},
    ]
    (tmp_path / "grefs.json").write_text(json.dumps(refs))
    rc = tokenize_gres.main(["--grefs", str(tmp_path / "grefs.json"), "--instances",
                             str(coco_fixture()), "--image-root", str(images), "--split", "val",
                             "--codec", f"builtin:{trained_codec[0]}",
                             "--out", str(tmp_path / "o")])
    assert rc == 0
    rows = rows_of(tmp_path / "o" / "gres_val.jsonl")
    assert [len(parse_gres_answer(r["conversations"][1]["value"])) for r in rows] == [1, 2, 0]
    assert '"label": "front black chair"' in rows[0]["conversations"][1]["value"]
    chair = rle_to_mask(rows[0]["target_rle"])
    assert chair.shape == (424, 640) and abs(int(chair.sum()) - 11087) < 300


def test_tokenize_dam_global_and_zoomed(trained_codec, tmp_path, capsys):
    from data_tools import check_data, tokenize_dam
    from svp.masktok.coco import mask_to_rle
    from svp.masktok.codec.scenes import draw_shapes_scene
    from svp.masktok.tokens import parse_mask_tokens

    rng = __import__("random").Random(5)
    images = tmp_path / "images"
    images.mkdir()
    rows, n_regions = [], 0
    for i in range(3):
        img, masks, kinds = draw_shapes_scene(rng, 160, 120, 3, min_visible=40)
        img.save(images / f"s{i}.png")
        rows.append({"image": f"s{i}.png", "regions": [
            {"mask": mask_to_rle(m), "caption": f"A {k} on a textured background."}
            for m, k in zip(masks, kinds, strict=True)]})
        n_regions += len(masks)
    big = np.zeros((120, 160), bool)
    big[10:110, 10:150] = True
    rows.append({"image": "s0.png", "mask": mask_to_rle(big), "caption": "Most of it."})
    rows.append({"image": "missing.png", "mask": mask_to_rle(big), "caption": "Gone."})
    ann = tmp_path / "dam.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = tokenize_dam.main(["--annotations", str(ann), "--image-root", str(images), "--codec",
                            f"builtin:{trained_codec[0]}", "--out", str(tmp_path / "o")])
    assert rc == 0
    out = capsys.readouterr().out
    written = rows_of(tmp_path / "o" / "dam.jsonl")
    assert len(written) == n_regions + 1 and "1 skipped" in out
    single = [r for r in written if isinstance(r["image"], str)]
    zoomed = [r for r in written if isinstance(r["image"], list)]
    assert single and zoomed
    assert all(r["box_share"] > 0.2 for r in single)
    assert all(r["box_share"] <= 0.2 for r in zoomed)
    for r in zoomed:
        q = r["conversations"][0]["value"]
        # SAMTok's template: one <image> in front, the crop inline, two token strings
        assert q.startswith("<image>\n") and q.count("<image>") == 2
        assert "Zoom in with the perspective as <image>, <|mt_start|>" in q
        assert len(parse_mask_tokens(q)) == 2
        assert list(Image.open(r["image"][1]).size) == r["crop_size"]
    assert written[-1]["conversations"][1]["value"] == "Most of it."
    # the output passes the registry validator (tags vs images, files exist)
    assert check_data.main(["--registry", str(tmp_path / "o" / "datasets.yaml")]) == 0
    # a look at two regions into the same folder, then the full run: every row again
    args = ["--annotations", str(ann), "--image-root", str(images), "--codec",
            f"builtin:{trained_codec[0]}", "--out", str(tmp_path / "o")]
    assert tokenize_dam.main([*args, "--limit", "2"]) == 0
    assert len(rows_of(tmp_path / "o" / "dam.jsonl")) == 2
    assert tokenize_dam.main(args) == 0
    assert rows_of(tmp_path / "o" / "dam.jsonl") == written


@pytest.mark.parametrize("box,size,window,zoom", [
    # narrower and lower than 140: widened by (140 - w) // 2 a side; 139 x 139 is square,
    # which SAMTok's resize condition never upscales
    ((263, 216, 284, 231), (640, 424), (204, 154, 343, 293), None),
    # at the corner: cut at the edge; 75 x 95 -> short side 280
    ((0, 0, 10, 50), (640, 424), (0, 0, 75, 95), (280, 354)),
    # large enough: kept as is
    ((100, 100, 400, 300), (640, 424), (100, 100, 400, 300), None),
])
def test_dam_zoom_window_and_size_as_samtok(box, size, window, zoom):
    from svp.masktok import dam_data

    got = dam_data.zoom_window(box, *size)
    assert got == window
    assert dam_data.zoom_size(got[2] - got[0], got[3] - got[1]) == zoom


def test_dam_zoom_size_quirks_and_threshold():
    from svp.masktok import dam_data

    assert dam_data.zoom_size(200, 150) == (373, 280)   # long side < 280: short side -> 280
    assert dam_data.zoom_size(300, 150) is None         # long side >= 280: kept
    assert dam_data.zoom_size(200, 200) is None         # square: kept
    assert dam_data.takes_zoom((0, 0, 64, 50), 64, 250)      # share exactly 0.2: zoom
    assert not dam_data.takes_zoom((0, 0, 64, 51), 64, 250)  # > 0.2: global


def test_tokenize_dam_on_the_coco_fixture(trained_codec, tmp_path, capsys):
    """Real COCO polygons (image 98304, 640x424): every region's branch, window and crop size
    follow from torchvision's box, and a zoomed region carries its full-image tokens and
    the tokens of its mask re-encoded inside the crop."""
    import torch
    from torchvision.ops import masks_to_boxes

    from data_tools import tokenize_dam
    from svp.masktok import dam_data
    from svp.masktok.coco import annotation_to_mask
    from svp.masktok.codec import load_codec
    from svp.masktok.tokens import codes_to_text, parse_mask_tokens
    from tests.helpers import coco_fixture

    inst = json.loads(coco_fixture().read_text())
    im = next(x for x in inst["images"] if x["id"] == 98304)
    w, h = im["width"], im["height"]
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        tmp_path / "img" / im["file_name"])
    anns = [a for a in inst["annotations"] if a["image_id"] == 98304]
    rows = [{"image": im["file_name"], "regions": [
        {"mask": a["segmentation"], "caption": f"annotation {a['id']}"} for a in anns]}]
    (tmp_path / "dam.json").write_text(json.dumps(rows))
    assert tokenize_dam.main(["--annotations", str(tmp_path / "dam.json"), "--image-root",
                              str(tmp_path / "img"), "--codec", f"builtin:{trained_codec[0]}",
                              "--out", str(tmp_path / "o")]) == 0
    written = rows_of(tmp_path / "o" / "dam.jsonl")
    codec = load_codec(f"builtin:{trained_codec[0]}")
    image = Image.open(tmp_path / "img" / im["file_name"]).convert("RGB")
    report = []
    for a, r in zip(anns, written, strict=True):
        mask = annotation_to_mask(a["segmentation"], h, w)
        box = tuple(float(v) for v in masks_to_boxes(torch.from_numpy(mask[None]))[0])
        zoom = dam_data.takes_zoom(box, w, h)
        assert isinstance(r["image"], list) == zoom
        codes = codec.encode(image, mask[None])[0]
        full = codes_to_text(int(codes[0]), int(codes[1]))
        q = r["conversations"][0]["value"]
        assert full in q
        if zoom:
            window = dam_data.zoom_window(box, w, h)
            assert r["zoom_window"] == list(window)
            crop = image.crop(window)
            size = dam_data.zoom_size(*crop.size)
            assert r["crop_size"] == list(size or crop.size)
            inner = codec.encode(crop.resize(size, Image.LANCZOS) if size else crop,
                                 dam_data.crop_mask(mask, window, size)[None])[0]
            assert parse_mask_tokens(q)[1] == (int(inner[0]), int(inner[1]))
        report.append((a["id"], round(dam_data.box_share(box, w, h), 4), zoom,
                       r.get("zoom_window"), r.get("crop_size"), q.replace("\n", " ")))
    print("\nDAM on COCO 98304:", *report, sep="\n")
    assert all(z for _, _, z, *_ in report)  # the three regions are small: all zoomed


def test_dam_crop_mask_is_interpolated_as_uint8_as_samtok():
    """SAMTok's DAM tokenizer resizes the cut 0/1 mask as a uint8 tensor (bilinear, then
    > 0.5): torch rounds each value first, so boundary pixels at exactly 0.5 are kept. A
    float32 interpolation (ours before) drops them and the crop's tokens change."""
    import torch
    import torch.nn.functional as F

    from svp.masktok import dam_data

    mask = np.zeros((60, 90), bool)
    mask[10:40, 20:61] = True
    window, size = (5, 5, 85, 55), (448, 280)
    got = dam_data.crop_mask(mask, window, size)
    cut = torch.from_numpy(mask[5:55, 5:85].astype(np.uint8))[None, None]
    want = (F.interpolate(cut, size=(280, 448), mode="bilinear")[0, 0] > 0.5).numpy()
    as_float = (F.interpolate(cut.float(), size=(280, 448), mode="bilinear")[0, 0] > 0.5)
    assert got.shape == (280, 448) and np.array_equal(got, want)
    assert (got != as_float.numpy()).sum() > 0


def test_rela_target_drops_crowd_and_rasterises_at_480():
    """ReLA's evaluator: crowd annotations dropped, the polygons scaled to the 480x480 image
    and rasterised there; a target of crowd annotations only has no defined target."""
    from pycocotools import mask as mask_utils

    from svp.masktok.gres_data import GresSample, rela_target

    square = [[10.0, 20.0, 110.0, 20.0, 110.0, 70.0, 10.0, 70.0]]  # in a 200x100 image
    other = [[150.0, 10.0, 190.0, 10.0, 190.0, 90.0, 150.0, 90.0]]
    s = GresSample(ref_id=1, sent_id=0, image_id=1, file_name="x", width=200, height=100,
                   sentence="s", ann_ids=[1, 2], segmentations=[square, other],
                   crowd=[False, True])
    got = rela_target(s)
    scaled = [[v * (2.4 if i % 2 == 0 else 4.8) for i, v in enumerate(square[0])]]
    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(scaled, 480, 480)))
    assert got.shape == (480, 480) and np.array_equal(got, want.astype(bool))
    only_crowd = GresSample(ref_id=2, sent_id=0, image_id=1, file_name="x", width=200,
                            height=100, sentence="s", ann_ids=[2], segmentations=[other],
                            crowd=[True])
    assert rela_target(only_crowd) is None


def test_eval_rela_protocol_runs_on_the_gres_files(sgres, trained_codec, tmp_path):
    codec_path, _ = trained_codec
    assert tokenize(sgres, codec_path, tmp_path, "--split", "val") == 0
    rows = rows_of(tmp_path / "gres_val.jsonl")
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "response": r["conversations"][1][
        "value"]}) + "\n" for r in rows))
    base = ["--pred", str(preds), "--image-root", str(sgres["images"]), "--codec",
            f"builtin:{codec_path}"]
    with pytest.raises(SystemExit):  # needs the gRefCOCO files (crowd flags, polygons)
        eval_gres.main([*base, "--gt", str(tmp_path / "gres_val.jsonl"), "--protocol", "rela",
                        "--out", str(tmp_path / "r.json")])
    assert eval_gres.main([*base, "--grefs", str(sgres["grefs"]), "--instances",
                           str(sgres["instances"]), "--split", "val", "--protocol", "rela",
                           "--out", str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["protocol"] == "rela" and res["metrics"]["samples"] == len(rows)


def test_rerun_with_other_inputs_never_keeps_stale_shards(sgres, trained_codec, tmp_path,
                                                          capsys):
    """Shards are reused only under the same inputs, arguments and codec weights: a full run
    after a ``--limit`` look, another ``--shard-size``, a retrained codec at the same path
    and a changed instances file each write every row afresh (before: 4 of N rows kept
    from the look, the old codec's answers under the new codec's name)."""
    import torch

    codec_path, _ = trained_codec
    out = tmp_path / "o"
    assert tokenize(sgres, codec_path, out, "--split", "train", "--limit", "4") == 0
    assert len(rows_of(out / "gres_train.jsonl")) == 4
    assert tokenize(sgres, codec_path, out, "--split", "train") == 0
    full = rows_of(out / "gres_train.jsonl")
    samples, _ = load_gres(sgres["grefs"], sgres["instances"], "train")
    assert len(full) == len(samples) > 4
    err = capsys.readouterr().err
    assert "discarding the shards of an earlier run" in err and "limit: 4 -> None" in err
    assert len(list((out / "shards").iterdir())) == 1  # the stale folder is gone
    assert tokenize(sgres, codec_path, out, "--split", "train", "--shard-size", "5") == 0
    # every row again (the questions differ: each shard seeds its own template draw)
    answers = [(r["id"], r["conversations"][1]["value"]) for r in full]
    assert [(r["id"], r["conversations"][1]["value"])
            for r in rows_of(out / "gres_train.jsonl")] == answers
    # the same codec file path with other weights: new codes, as a fresh run writes them
    other = tmp_path / "codec.pt"
    state = torch.load(codec_path, weights_only=False)
    for name, t in state["model"].items():
        if "codebook" in name or "embed" in name:
            state["model"][name] = torch.flip(t, dims=[0])
    torch.save(state, other)
    assert tokenize(sgres, other, out, "--split", "train") == 0
    retrained = rows_of(out / "gres_train.jsonl")
    fresh = tmp_path / "fresh"
    assert tokenize(sgres, other, fresh, "--split", "train") == 0
    assert retrained == rows_of(fresh / "gres_train.jsonl") != full
    summary = json.loads((out / "gres_train.summary.json").read_text())
    assert summary["codec_fingerprint"].startswith("builtin:codec.pt=")
    # a second split into the same folder adds its registry entry beside the first
    assert tokenize(sgres, other, out, "--split", "val") == 0
    import yaml

    reg = yaml.safe_load((out / "datasets.yaml").read_text())["datasets"]
    assert sorted(reg) == ["gres_train", "gres_val"]
    assert reg["gres_val"]["annotation_path"] == "gres_val.jsonl"


def test_two_writers_cannot_share_an_output_folder(sgres, trained_codec, tmp_path, capsys):
    """While one run holds the folder, a second stops at once, naming the holder; a holder
    killed with SIGKILL leaves nothing locked (the OS drops the lock)."""
    import signal
    import subprocess
    import sys
    import time

    from svp.common.io import output_lock

    out = tmp_path / "o"
    code = ("import sys, time; from svp.common.io import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert tokenize(sgres, trained_codec[0], out, "--split", "train") == 2
        err = capsys.readouterr().err
        assert f"{out} is being written by another run (pid {holder.pid})" in err
        assert not (out / "gres_train.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    with output_lock(out):  # free again after the holder died
        pass
    assert tokenize(sgres, trained_codec[0], out, "--split", "train") == 0
