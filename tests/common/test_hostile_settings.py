"""Nonsense settings stop at start-up, naming the variable: values that used to be accepted
and then either silently replaced (``MAX_PIXELS=0``/``1`` became 12845056 in the converter)
or carried into training (a negative expert weight, a 99999999999-pixel side, NEO's
minimum above its maximum), or that passed the recipe's check and failed later
(``MAX_PIXELS=abc``/``-1``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from svp.common.settings import SettingsError, qwen_pixel_bounds
from tests.helpers import REPO, offline_env


@pytest.mark.parametrize(("module", "env", "message"), [
    ("covt", {"SVP_COVT_WEIGHTS": "sam=-1"}, "SVP_COVT_WEIGHTS='sam=-1': bad weight"),
    ("covt", {"SVP_COVT_WEIGHTS": "sam=nan"}, "a finite number >= 0"),
    ("covt", {"SVP_COVT_WEIGHTS": "depth=inf"}, "a finite number >= 0"),
    ("croptool", {"SVP_CROP_MAIN_SHORT": "99999999999"}, "expected 0 or 28..8192 pixels"),
    ("croptool", {"SVP_CROP_MAIN_SHORT": "1"}, "SVP_CROP_MAIN_SHORT='1': expected 0 or 28"),
    ("croptool", {"SVP_CROP_MAX_SHORT": "27"}, "SVP_CROP_MAX_SHORT='27': expected 28..8192"),
    ("neo", {"SVP_NEO_MIN_PIXELS": "500000", "SVP_NEO_MAX_PIXELS": "1000"},
     "SVP_NEO_MIN_PIXELS 500000 > SVP_NEO_MAX_PIXELS 1000"),
])
def test_nonsense_capability_settings_are_refused(module, env, message):
    import importlib

    settings = importlib.import_module(f"svp.{module}.settings")
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.load(env)


def test_sensible_edges_still_pass():
    from svp.covt.settings import load as covt
    from svp.croptool.settings import load as crop
    from svp.neo.settings import load as neo

    assert covt({"SVP_COVT_WEIGHTS": "sam=0,depth=2.5"}).weights == {"sam": 0.0, "depth": 2.5}
    assert crop({"SVP_CROP_MAIN_SHORT": "0", "SVP_CROP_MAX_SHORT": "28"}).main_short == 0
    assert neo({"SVP_NEO_MIN_PIXELS": "1000"}).min_pixels == 1000  # max from the checkpoint


@pytest.mark.parametrize(("env", "message"), [
    ({"MAX_PIXELS": "0"}, "MAX_PIXELS='0': below one merged patch (784 pixels at 28x28)"),
    ({"MAX_PIXELS": "1"}, "MAX_PIXELS='1': below one merged patch"),
    ({"MAX_PIXELS": "-1"}, "MAX_PIXELS='-1': below one merged patch"),
    ({"MAX_PIXELS": "abc"}, "MAX_PIXELS='abc': expected a whole number"),
    ({"IMAGE_MAX_TOKEN_NUM": "0"}, "IMAGE_MAX_TOKEN_NUM='0': below one token"),
    ({"MIN_PIXELS": "2000000", "MAX_PIXELS": "1003520"},
     "the image budget's minimum (1999984 pixels"),
])
def test_the_image_budget_is_checked(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        qwen_pixel_bounds(28, env)


def test_image_budget_as_ms_swift_reads_it():
    assert qwen_pixel_bounds(28, {}) == (4 * 784, 16384 * 784)
    assert qwen_pixel_bounds(28, {"MAX_PIXELS": "1003520"}) == (3136, 1003520)
    assert qwen_pixel_bounds(32, {"MAX_PIXELS": "1003520", "IMAGE_MAX_TOKEN_NUM": "600"}) == (
        4 * 1024, 600 * 1024)


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_recipes_stop_on_a_bad_image_budget_before_launching(tmp_path, value):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    proc = subprocess.run(["bash", str(REPO / "recipes" / "sft_crop_qwen25vl_7b.sh")],
                          capture_output=True, text=True, timeout=120,
                          env=offline_env(DRY_RUN="1", DATA=str(data), MAX_PIXELS=value))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"error: MAX_PIXELS='{value}'" in proc.stderr
    assert "swift sft" not in proc.stdout


def test_the_converter_refuses_what_it_used_to_replace(tmp_path):
    """``MAX_PIXELS=0`` / ``1`` used to become the 12845056-pixel default, writing boxes for a
    processor training would not have; ``--main-short 1`` went around the variable's check."""
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"image_path": "a.jpg", "QnA": [
        {"Q": "q", "A3": "{Crop x [1, 2, 30, 40]} <answer>a</answer>"}]}) + "\n")
    tool = [sys.executable, str(REPO / "data_tools" / "convert_vlmr3.py"), "--input", str(src),
            "--image_base_path", str(tmp_path), "--output", str(tmp_path / "out.jsonl")]
    for env, args, message in (({"MAX_PIXELS": "0"}, [], "MAX_PIXELS='0': below one"),
                               ({"MAX_PIXELS": "1"}, [], "MAX_PIXELS='1': below one"),
                               ({}, ["--main-short", "1"], "--main-short 1: expected 0 or 28"),
                               ({}, ["--max-pixels", "abc"], "invalid int value")):
        proc = subprocess.run([*tool, *args], capture_output=True, text=True, timeout=120,
                              env=offline_env(**env))
        assert proc.returncode == 2 and message in proc.stderr, (env, args, proc.stderr[-500:])
        assert not (tmp_path / "out.jsonl").exists()
    ok = subprocess.run(tool, capture_output=True, text=True, timeout=120,
                        env=offline_env(MAX_PIXELS="1003520"))
    assert ok.returncode == 0, ok.stderr[-2000:]
