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
    ({"SVP_CROP_MAX_SHORT": "0"}, "SVP_CROP_MAX_SHORT='0': must be >= 1"),
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
