"""convert_vlmr3.py on a VLM-R3-format row (tests/fixtures/croptool: our own text, the box and
picture size of VLM-R3's README example), then real ``swift sft`` with the crop template on the
tiny model, then the inference CLI executing a crop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import convert_vlmr3, crop_infer
from svp.croptool.geometry import CropPolicy, parse_tool_calls
from tests.helpers import (
    REPO,
    TRAIN_ARGS,
    fixture,
    last_checkpoint,
    offline_env,
    run_swift,
)

PLUGIN = str(REPO / "plugins" / "croptool.py")


def example_row() -> dict:
    """One VLM-R3 training row (image_path / image_id / QnA, a {Crop ...} call in pixels)."""
    return json.loads(fixture("croptool", "vlmr3_row.jsonl").read_text())


@pytest.fixture()
def example_data(tmp_path):
    row = example_row()
    # a stand-in picture of the row's size: its box reaches y = 480 of a 640x480 image
    rng = np.random.default_rng(0)
    img = tmp_path / "images" / row["image_path"]
    img.parent.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(img, "JPEG")
    two = {"Q": "What are the two people holding?", "A3": (
        "<think>\nFirst the left one. {Crop person 1 [0.00, 141.43, 79.23, 480.00]}\n"
        "Then the right one. {Crop person 2 [400, 120, 600, 470]}\n</think>\n\n"
        "<answer>Umbrellas.</answer>")}
    bad = [{"Q": "swapped?", "A3": "{Crop x [200, 10, 100, 50]} <answer>a</answer>"},
           {"Q": "nan?", "A3": "{Crop x [1, 2, nan, 4]} <answer>a</answer>"},
           {"Q": "text?", "A3": "{Crop x [1, 2, three, 4]} <answer>a</answer>"},
           {"Q": "zero?", "A3": "{Crop x [10, 10, 10, 50]} <answer>a</answer>"},
           {"Q": "outside?", "A3": "{Crop x [700, 10, 800, 50]} <answer>a</answer>"},
           {"Q": "", "A3": "<answer>a</answer>"}]
    rows = [row, {"image_path": row["image_path"], "QnA": [two] * 3 + bad},
            {"image_path": "missing.jpg", "QnA": [two]}]
    src = tmp_path / "vlir.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    return src, tmp_path / "images", img


def test_convert_example_row(example_data, tmp_path, capsys):
    src, base, img = example_data
    out = tmp_path / "crop_sft.jsonl"
    assert convert_vlmr3.main(["--input", str(src), "--image_base_path", str(base),
                               "--output", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4
    first = rows[0]["messages"]
    assert first[0]["content"].startswith("<image>What is the person at the far left")
    calls = parse_tool_calls(first[1]["content"])
    assert len(calls) == 1 and calls[0].form == "tool_call" and "{Crop" not in first[1]["content"]
    # written in Qwen2.5-VL space: original pixels scaled to the 588x448 main image
    policy = CropPolicy("qwen2_5_vl")
    expected = policy.box_to_model((0.0, 141.43, 79.23, 480.0), (640, 480))
    assert calls[0].box == tuple(float(round(v)) for v in expected)
    assert rows[0]["images"] == [str(img.resolve())]
    # every row says what its boxes mean (the crop template checks it)
    assert {r["crop_space"] for r in rows} == {"qwen2_5_vl 588x448"}  # the main image's size
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["written"] == 4 and summary["crops"] == 7
    assert summary["skipped_bad_box"] == 5 and summary["skipped_empty_text"] == 1
    assert summary["skipped_missing_image"] == 1 and summary["skipped_malformed"] == 1
    err = capsys.readouterr().err
    for reason in ("swapped corners", "not finite", "non-numeric coordinate 'three'",
                   "zero-area", "outside the 640x480 image", "missing_image", "invalid JSON"):
        assert reason in err
    assert "line 2 QnA 3: bad_box: crop 1: swapped corners" in err


def test_convert_with_crops_dir_and_qwen3_space(example_data, tmp_path):
    src, base, img = example_data
    out = tmp_path / "pre.jsonl"
    assert convert_vlmr3.main(["--input", str(src), "--image_base_path", str(base),
                               "--output", str(out), "--family", "qwen3_vl",
                               "--crops-dir", str(tmp_path / "crops")]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    two = rows[1]
    assert two["crop_space"] == "qwen3_vl"
    text = two["messages"][1]["content"]
    assert text.count("</tool_call><image>") == 2 and len(two["images"]) == 3
    calls = parse_tool_calls(text)
    assert calls[1].box == (625.0, 250.0, 938.0, 979.0)  # 0..1000 of 640x480
    policy = CropPolicy("qwen3_vl")
    crop, _, _ = policy.execute(Image.open(img).convert("RGB"), calls[1].box)
    saved = Image.open(two["images"][2])
    assert saved.size == crop.size
    assert np.array_equal(np.asarray(saved), np.asarray(crop))


def test_convert_vlmr3_release_format(tmp_path):
    """VLM-R3's own SFT release (a JSON list of image_path / question / response_list /
    img_crop_list, boxes {"bbox_2d"} in the pixels of its processor's resized image): the
    boxes land on the same original pixels, the parts are joined as its loader joins them,
    and its crops are used (keep) or re-cut from the boxes (recut)."""
    from data_tools.convert_vlmr3 import vlmr3_input_size

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    Image.fromarray(rng.integers(0, 255, (1000, 1500, 3), dtype=np.uint8)).save(
        tmp_path / "img" / "a.jpg")
    Image.new("RGB", (300, 200)).save(tmp_path / "img" / "a_crop0.jpg")
    rw, rh = vlmr3_input_size((1500, 1000))
    assert (rw, rh) == (1512, 1008)  # VLM-R3's resized space: multiples of 28 near 1500x1000
    box_px = (150.0, 100.0, 750.0, 500.0)
    box_r = [round(box_px[0] * rw / 1500), round(box_px[1] * rh / 1000),
             round(box_px[2] * rw / 1500), round(box_px[3] * rh / 1000)]
    rec = {"image_path": "a.jpg", "question": "What is on the left?",
           "response_list": [f'<think>Look left. {{"bbox_2d": {box_r}}}',
                             "The crop shows a cat.</think>\n<answer>cat</answer>"],
           "img_crop_list": ["a_crop0.jpg"]}
    src = tmp_path / "release.json"
    src.write_text(json.dumps([rec, {"image_path": "a.jpg", "question": "x",
                                     "response_list": "not a list"}]))
    for mode in ("recut", "keep"):
        out = tmp_path / f"{mode}.jsonl"
        assert convert_vlmr3.main(["--input", str(src), "--image_base_path",
                                   str(tmp_path / "img"), "--output", str(out),
                                   "--release-crops", mode]) == 0
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 1
        text = rows[0]["messages"][1]["content"]
        assert text.startswith("<think>Look left. <tool_call>[") and text.endswith(
            "<answer>cat</answer>\n")
        policy = CropPolicy("qwen2_5_vl")
        back = policy.box_to_pixels(parse_tool_calls(text)[0].box, (1500, 1000))
        assert back == pytest.approx(box_px, abs=3)  # two roundings of about 1 px each
        if mode == "keep":
            assert "</tool_call>\n<image>The crop shows" in text
            assert rows[0]["images"][1].endswith("a_crop0.jpg")
        else:
            assert "<image>" not in text and len(rows[0]["images"]) == 1
    summary = json.loads((tmp_path / "keep.summary.json").read_text())
    assert summary["skipped_malformed"] == 1

    # a part that goes on after its call: VLM-R3's loader puts the crop after the part; a
    # crop beyond the parts is never reached; a box out of the picture, which we cannot
    # re-cut, keeps the release's crops (VLM-R3 trains the row) instead of dropping it
    Image.new("RGB", (200, 100)).save(tmp_path / "img" / "a_crop1.jpg")
    more = {"image_path": "a.jpg", "question": "And?",
            "response_list": [f'<think>Look. {{"bbox_2d": {box_r}}} A cat, I think.',
                              "</think><answer>cat</answer>"],
            "img_crop_list": ["a_crop0.jpg", "a_crop1.jpg", "a_crop1.jpg"]}
    outside = {"image_path": "a.jpg", "question": "Far right?",
               "response_list": ['<think>Look. {"bbox_2d": [1600, 10, 1700, 90]}',
                                 "</think><answer>sky</answer>"],
               "img_crop_list": ["a_crop1.jpg"]}
    src.write_text(json.dumps([more, outside]))
    for mode in ("keep", "recut"):
        out = tmp_path / f"{mode}2.jsonl"
        assert convert_vlmr3.main(["--input", str(src), "--image_base_path",
                                   str(tmp_path / "img"), "--output", str(out),
                                   "--release-crops", mode, "--crops-dir",
                                   str(tmp_path / "crops"), "--prompt-suffix", "vlmr3"]) == 0
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 2
        first, second = (r["messages"][1]["content"] for r in rows)
        if mode == "keep":
            assert "</tool_call> A cat, I think.\n<image></think>" in first
            assert [Path(p).name for p in rows[0]["images"][1:]] == ["a_crop0.jpg",
                                                                     "a_crop1.jpg"]
        else:
            assert "</tool_call><image> A cat, I think.\n</think>" in first  # our cut
            assert Path(rows[0]["images"][1]).parent == tmp_path / "crops"
        assert second.endswith("</tool_call>\n<image></think><answer>sky</answer>\n")
        assert Path(rows[1]["images"][1]).name == "a_crop1.jpg"
        question = rows[0]["messages"][0]["content"]
        assert question.startswith("<image>And?\nYou need to first think about the reasoning")
        assert "(format: <tool_call>[x1, y1, x2, y2]</tool_call>)" in question
        summary = json.loads(out.with_suffix(".summary.json").read_text())
        assert summary["release_crops_kept_for_bad_boxes"] == 1
        assert summary["release_crops_unused"] == (1 if mode == "keep" else 0)


@pytest.mark.slow
def test_example_row_sft_then_crop_inference(example_data, tiny_model, tmp_path):
    src, base, img = example_data
    data = tmp_path / "crop_sft.jsonl"
    assert convert_vlmr3.main(["--input", str(src), "--image_base_path", str(base),
                               "--output", str(data)]) == 0
    # the rows' crop_space reaches the template through ms-swift: data converted at another
    # main-image size stops the run at its first row, before any step
    mismatch = run_swift("sft", [
        "--model", str(tiny_model("qwen2_5_vl")), "--model_type", "qwen2_5_vl",
        "--template", "qwen2_5_vl_crop", "--external_plugins", PLUGIN, "--dataset", str(data),
        "--tuner_type", "full", "--max_steps", "4", "--output_dir", str(tmp_path / "no"),
        *TRAIN_ARGS,
    ], tmp_path / "mismatch.log", offline_env(SVP_CROP_MAIN_SHORT="512"), cwd=tmp_path,
        expect_ok=False)
    assert "StopTraining" in mismatch and "converted for 'qwen2_5_vl 588x448'" in mismatch
    assert "reads them as 'qwen2_5_vl 672x504'" in mismatch
    assert "{'loss'" not in mismatch
    out_dir = tmp_path / "out"
    log = run_swift("sft", [
        "--model", str(tiny_model("qwen2_5_vl")), "--model_type", "qwen2_5_vl",
        "--template", "qwen2_5_vl_crop", "--external_plugins", PLUGIN, "--dataset", str(data),
        "--tuner_type", "full", "--max_steps", "4", "--save_steps", "4",
        "--learning_rate", "1e-4", "--output_dir", str(out_dir), "--strict", "true",
        *TRAIN_ARGS,
    ], tmp_path / "sft.log", offline_env(), cwd=tmp_path)
    losses = [float(x) for x in re.findall(r"\{'loss': '([0-9.]+)'", log)]
    assert len(losses) == 4 and all(0 < x < 20 for x in losses)
    ckpt = last_checkpoint(out_dir)
    args = json.loads((ckpt.parent / "args.json").read_text())
    assert args["template"] == "qwen2_5_vl_crop"
    result = tmp_path / "result.json"
    assert crop_infer.main([
        "--model_path", str(ckpt), "--model_type", "qwen2_5_vl", "--image_path", str(img),
        "--question", "What is the person at the far left edge of the picture carrying?",
        "--assistant_prefix", "<think>\nLook at the left. <tool_call>[0, 130, 73, 448]</tool_call>",
        "--max_new_tokens", "12", "--temperature", "0", "--output_json", str(result)]) == 0
    out = json.loads(result.read_text())
    assert len(out["tool_calls"]) >= 1
    first = out["tool_calls"][0]
    assert first["box_model"] == [0, 130, 73, 448]
    assert first["box_pixels"] == pytest.approx([0, 139.29, 79.46, 480], abs=0.01)
    assert out["text"].startswith("<think>\nLook at the left. <tool_call>[0, 130, 73, 448]"
                                  "</tool_call><image>")
    assert len(out["crops"]) == len(out["tool_calls"])
    crop = Image.open(out["crops"][0])
    assert crop.size == CropPolicy("qwen2_5_vl").crop_size(80, 341)
