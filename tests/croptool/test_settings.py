"""The crop tool's settings: sizes into the policy, the judge, errors naming the variable."""

from __future__ import annotations

import pytest

from svp.common.settings import SettingsError
from svp.croptool.settings import load


def test_sizes_reach_the_policy():
    p = load({"SVP_CROP_MAIN_SHORT": "0", "SVP_CROP_MAX_SHORT": "224"}).policy("qwen3_vl")
    assert (p.main_short, p.crop_max_short, p.space) == (0, 224, "norm1000")
    default = load({}).policy("qwen2_5_vl")
    assert (default.main_short, default.crop_max_short, default.factor) == (448, 448, 28)


@pytest.mark.parametrize("env, message", [
    ({"SVP_CROP_MAIN_SHORT": "big"}, "SVP_CROP_MAIN_SHORT='big': expected an integer"),
    ({"SVP_CROP_MAX_SHORT": "0"}, "SVP_CROP_MAX_SHORT='0': expected 28..8192 pixels"),
    ({"SVP_JUDGE_TIMEOUT": "-3"}, "SVP_JUDGE_TIMEOUT='-3': must be > 0"),
    ({"SVP_JUDGE_WORKERS": "many"}, "SVP_JUDGE_WORKERS='many': expected an integer"),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        load(env)


def test_judge_only_with_a_url():
    assert load({"SVP_JUDGE_MODEL": "m"}).judge() is None
    judge = load({"SVP_JUDGE_URL": "http://h:1/v1/", "SVP_JUDGE_API_KEY": "sk-1",
                  "SVP_JUDGE_TIMEOUT": "5"}).judge()
    assert (judge.url, judge.api_key, judge.timeout, judge.workers) == ("http://h:1/v1", "sk-1",
                                                                        5.0, 8)


CASES = [
    ("qwen2_5_vl", {}), ("qwen2_5_vl", {"MAX_PIXELS": "1003520"}),
    ("qwen2_5_vl", {"MAX_PIXELS": "1003520", "MIN_PIXELS": "200000"}),
    ("qwen2_5_vl", {"MAX_PIXELS": "1003520", "IMAGE_MAX_TOKEN_NUM": "600"}),
    ("qwen3_vl", {"MAX_PIXELS": "1003520"}), ("qwen3_vl", {"IMAGE_MIN_TOKEN_NUM": "64"}),
]
_ORACLE = """
import importlib, json, os, sys
from qwen_vl_utils import vision_process as vp
from swift.model.models.qwen import compat_qwen_vl_utils, patch_qwen_vl_utils
VARS = ("MAX_PIXELS", "MIN_PIXELS", "IMAGE_MAX_TOKEN_NUM", "IMAGE_MIN_TOKEN_NUM")
out = []
for family, env in json.loads(sys.argv[1]):
    for k in VARS:
        os.environ.pop(k, None)
    os.environ.update(env)
    vars(vp).pop("_patch", None)
    importlib.reload(vp)  # a fresh module, as in a new process
    compat_qwen_vl_utils(image_patch_size=14 if family == "qwen2_5_vl" else 16)
    patch_qwen_vl_utils(vp)
    out.append([vp.IMAGE_MIN_TOKEN_NUM, vp.IMAGE_MAX_TOKEN_NUM])
print(json.dumps(out))
"""


def test_pixel_bounds_are_the_ones_ms_swift_gives_the_processor():
    """The oracle is ms-swift itself: with each environment, its processor set-up
    (``compat_qwen_vl_utils`` then ``patch_qwen_vl_utils``) leaves qwen_vl_utils' bounds
    exactly where :func:`pixel_bounds` says."""
    import json
    import subprocess
    import sys

    from svp.croptool.settings import pixel_bounds
    from tests.helpers import REPO, offline_env

    proc = subprocess.run([sys.executable, "-c", _ORACLE, json.dumps(CASES)], cwd=REPO,
                          capture_output=True, text=True, env=offline_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for (family, env), (lo, hi) in zip(CASES, found, strict=True):
        f2 = (28 if family == "qwen2_5_vl" else 32) ** 2
        assert pixel_bounds(family, env) == (lo * f2, hi * f2), (family, env)
