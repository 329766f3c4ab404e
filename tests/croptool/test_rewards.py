"""R-GRPO rewards: documented values on crafted completions, and property tests (arbitrary
strings, adversarial near-misses, arbitrary scheduler records): never an exception, always a
finite value in the documented range."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svp.croptool import rewards as R
from svp.croptool import settings as crop_settings
from svp.croptool.format import FEEDBACK, VISION_BLOCK, clean_text
from svp.croptool.judge import Judge
from tests.helpers import JudgeHandler

GOOD = ("<think>The sign is small. <tool_call>[10, 20, 200, 180]</tool_call>"
        + VISION_BLOCK + " It reads STOP.</think><answer>stop</answer>")


def traj(calls, executed=None, wh=(640, 480), model_wh=(588, 448), space="resized", factor=28):
    calls = [{"box": list(b) if b is not None else None, "error": e} for b, e in calls]
    ex = sum(1 for c in calls if c["error"] is None) if executed is None else executed
    return R.Trajectory(calls, wh, model_wh, space, factor, ex)


# ----------------------------------------------------------------------------- format
@pytest.mark.parametrize("text, expected", [
    (GOOD, 1.0),
    ("<think>no tools needed</think>\n<answer>B</answer>\n", 1.0),
    ("<think>x <tool_call>[1, 2, three, 4]</tool_call></think><answer>a</answer>", 0.5),
    ("<think>x <tool_call>[1, 2, 3, 4]</think><answer>a</answer>", 0.5),  # unbalanced
    ("<think>x</think><answer>a <tool_call>[1,2,3,4]</tool_call></answer>", 0.5),
    ("<answer>a</answer>", 0.0),
    ("<think>x</think>", 0.0),
    ("<think>x</think><answer>a</answer> trailing words", 0.0),
    ("<think></think><answer>a</answer>", 0.0),
    ("<think>x</think><answer>a</answer><answer>b</answer>", 0.0),
    ("<think>x</think><answer>" + "a" * 1001 + "</answer>", 0.0),  # DeepEyes' anti-hacking
    (None, 0.0),
])
def test_format(text, expected):
    assert R.format_reward(text) == expected


def test_format_ignores_injected_blocks_and_failure_notes():
    text = ("<think>a <tool_call>[1, 1, 0, 0]</tool_call>" + FEEDBACK.format(reason="swapped")
            + "b</think><answer>c</answer>")
    assert R.format_reward(text) == 1.0
    assert clean_text(text) == ("<think>a <tool_call>[1, 1, 0, 0]</tool_call>b</think>"
                                  "<answer>c</answer>")


# ----------------------------------------------------------------------------- segments
def test_segment_length_is_the_shortest_segment_like_vlmr3():
    assert R.segment_length_reward(GOOD) == pytest.approx(0.1)  # both segments >= 10 chars
    short = "<think>ab <tool_call>[1,2,3,4]</tool_call> a much longer segment</think><answer>x"
    assert R.segment_length_reward(short) == pytest.approx(0.02)
    assert R.segment_length_reward("<answer>x</answer>") == 0.0
    assert R.segment_length_reward("<think><tool_call>[1,2,3,4]</tool_call></think>") == 0.0


def vlmr3_length_reward(content: str) -> float:
    """VLM-R3's ``length_reward`` (its open_r1/rgrpo.py, commit 76e2d8f), restated as the
    oracle: whitespace collapsed, split at ``{"bbox_2d": [...]}``, empty middle segments
    dropped, first and last kept."""
    import re

    thinking = content.split("<answer>")[0].strip().replace("<think>", "").replace(
        "</think>", "")
    thinking = re.sub(r"\s+", " ", thinking).strip()
    segments = re.split(r'\{"bbox_2d":\s*\[[^\]]*\]\}', thinking)
    kept = [g.strip() for i, g in enumerate(segments)
            if g.strip() or i == 0 or i == len(segments) - 1]
    return min(0.10, (min(len(g) for g in kept) if kept else 0) * 0.01)


@pytest.mark.parametrize("text", [
    '<think>look  here {"bbox_2d": [1, 2, 3, 4]} {"bbox_2d": [5, 6, 7, 8]} then\n\n ok'
    '</think><answer>x</answer>',                     # back-to-back calls: empty middle dropped
    '<think>a   b\tc {"bbox_2d": [1, 2, 3, 4]} de</think><answer>x</answer>',  # collapsed
    '{"bbox_2d": [1, 2, 3, 4]} tail text here</think><answer>x</answer>',  # empty first kept
    '<think>only text, no call at all</think><answer>x</answer>',
])
def test_segment_length_equals_vlmr3s_code(text):
    assert R.segment_length_reward(text) == pytest.approx(vlmr3_length_reward(text))
    assert R.vlmr3_segment_length_reward(text) == pytest.approx(vlmr3_length_reward(text))


@pytest.mark.parametrize("text, ours, vlmr3", [
    # VLM-R3 splits only at its exact spacing: a spaced call is text there, a split for us
    ('<think>look here { "bbox_2d" : [1, 2, 3, 4]} ab</think><answer>x</answer>', 0.02, 0.1),
    # our syntax is read as the {"bbox_2d": ..} it stands for
    ('<think>look here <tool_call>[1, 2, 3, 4]</tool_call> ab</think><answer>x</answer>',
     0.02, 0.02),
])
def test_segment_length_vlmr3_splits_as_its_regex(text, ours, vlmr3):
    assert R.segment_length_reward(text) == pytest.approx(ours)
    assert R.vlmr3_segment_length_reward(text) == pytest.approx(vlmr3)
    assert R.vlmr3_segment_length_reward(R.as_vlmr3_calls(text)) == pytest.approx(
        vlmr3_length_reward(R.as_vlmr3_calls(text)))


def vlmr3_format_and_repeat(content: str, accuracy: float) -> tuple[float, float]:
    """VLM-R3's ``format_reward`` and ``repeat_reward`` (its open_r1/rgrpo.py, commit
    76e2d8f) restated as the oracle, the repeat reward zeroed unless accuracy is 1 as its
    trainer does: every ``{...}`` mentioning "bbox" must parse as JSON with a ``bbox_2d``."""
    import json
    import re

    fmt = 0.5 if re.fullmatch(r".*?<answer>.*?</answer>\s*", content, re.DOTALL) else 0.0
    seen, ok = set(), True
    for j in re.findall(r"\{.*?\}", content, re.DOTALL):
        if "bbox" not in j:
            continue
        try:
            js = json.loads(j)
            js["bbox_2d"]
            seen.add(json.dumps(js, sort_keys=True))
        except Exception:  # noqa: BLE001 - the oracle's own rule
            ok = False
            break
    repeat = 0.5 * min(1, len(seen)) if ok else 0.0
    return fmt, repeat if accuracy == 1.0 else 0.0


@pytest.mark.parametrize("text", [
    '<think>look {"bbox_2d": [1, 2, 3, 4]} then</think><answer>x</answer>',
    '<think>two {"bbox_2d": [1, 2, 3, 4]} and {"bbox_2d": [1, 2, 3, 4]}</think>'
    '<answer>x</answer>\n',                                     # a repeat still counts once
    '<think>bad {"bbox_2d": [1, 2, 3}</think><answer>x</answer>',  # one bad box zeroes it
    'no think at all {"bbox_2d": [5, 6, 7, 8]} <answer>x</answer> trailing',  # no format
    '<think>no call</think><answer>x</answer>',                # no box: no region reward
    '<think>line one\nline two {"bbox_2d": [1, 2, 3, 4]}</think>\n<answer>a\nb</answer>',
    'plain answer',
    '<think>three numbers {"bbox_2d": [10, 20, 30]}</think><answer>x</answer>',  # value unread
    '<think>{"bbox_2d": "left"} {"box": 1}</think><answer>x</answer>',  # "bbox" not in 2nd
    '<think>{"bbox": [1, 2, 3, 4]}</think><answer>x</answer>',    # no bbox_2d key: zero
    '<think>a {"bbox_2d": [1, 2, {"x": 1}]} b</think><answer>x</answer>',  # non-greedy cut
])
@pytest.mark.parametrize("accuracy", [1.0, 0.0])
def test_vlmr3_reward_set_equals_its_code(text, accuracy):
    """REWARD_SET=vlmr3's format and region rewards give VLM-R3's values on its own call
    syntax, its quirks included (a box's value is never looked at); the region reward only
    for a right answer. Our <tool_call> form scores as the JSON it stands for."""
    fmt, repeat = vlmr3_format_and_repeat(text, accuracy)
    assert R.vlmr3_format_reward(text) == fmt
    assert R.vlmr3_regions_reward(text, accuracy) == repeat
    ours = R.as_vlmr3_calls(text.replace('{"bbox_2d": ', "<tool_call>").replace(
        "]}", "]</tool_call>")) if '{"bbox_2d": [' in text else text
    assert R.vlmr3_regions_reward(ours, accuracy) == vlmr3_format_and_repeat(ours, accuracy)[1]
    assert list(R.REWARD_SETS["vlmr3"]) == ["rgrpo_accuracy_vlmr3", "rgrpo_format_vlmr3",
                                            "rgrpo_regions_vlmr3",
                                            "rgrpo_segment_length_vlmr3"]
    top = {name: float(rng.strip("{}[]").split(",")[-1])  # each range's upper end
           for name, (rng, _, _) in R.VLMR3_REWARDS.items()}
    assert sum(top[n] * w for n, (_, w, _) in R.VLMR3_REWARDS.items()) == pytest.approx(2.1)


# ----------------------------------------------------------------------------- crops
def test_crop_validity_reasons():
    t = traj([((10, 20, 200, 180), None),        # valid
              ((12, 21, 201, 181), None),        # repeat of the first (IoU > 0.9)
              ((0, 0, 588, 448), None),          # the whole image
              ((100, 100, 110, 110), None),      # smaller than a merged patch (28 px)
              ((500, 400, 700, 600), None),      # mostly outside
              (None, "swapped corners (5,5) / (1,1)")])
    verdicts = R.call_verdicts(t)
    assert verdicts == [None, "repeats an earlier crop", "the whole image",
                        "smaller than one merged patch", "partly outside the image",
                        "swapped corners (5,5) / (1,1)"]
    assert R.crop_valid_reward(t) == pytest.approx(1 / 6)
    assert R.crop_valid_reward(traj([])) == 0.0
    assert R.crop_valid_reward(None) == 0.0


def test_crop_validity_in_qwen3_space():
    t = traj([((0, 0, 500, 500), None), ((0, 0, 1000, 1000), None)],
             model_wh=(640, 480), space="norm1000", factor=32)
    assert R.call_verdicts(t) == [None, "the whole image"]


def test_region_iou_uses_original_pixels():
    # model box (10,20,200,180) on a 588x448 view of a 640x480 image
    t = traj([((10, 20, 200, 180), None)])
    px = R.Trajectory.pixel_boxes(t)[0]
    assert px == pytest.approx((10 * 640 / 588, 20 * 480 / 448, 200 * 640 / 588, 180 * 480 / 448))
    assert R.region_iou_reward(t, [list(px)]) == pytest.approx(1.0)
    assert R.region_iou_reward(t, [[400, 300, 600, 470]]) == 0.0
    two = R.region_iou_reward(t, [list(px), [400, 300, 600, 470]])
    assert two == pytest.approx(0.5)
    assert R.region_iou_reward(t, None) is None
    assert R.region_iou_reward(t, []) is None
    assert R.region_iou_reward(None, [[0, 0, 10, 10]]) == 0.0


def test_tool_reward_counts_executed_crops_not_text():
    assert R.tool_reward(traj([((10, 20, 200, 180), None)]), 1.0) == 1.0
    assert R.tool_reward(traj([((10, 20, 200, 180), None)]), 0.0) == 0.0
    assert R.tool_reward(traj([(None, "bad")]), 1.0) == 0.0
    assert R.tool_reward(None, 1.0) == 0.0  # tags in text alone never earn it


def test_trajectory_from_infos_is_lenient():
    ok = {"crop_tool": {"calls": [{"box": [1, 2, 3, 4], "error": None}], "executed": 1,
                        "image_wh": [640, 480], "model_wh": [588, 448], "space": "resized",
                        "factor": 28}}
    t = R.Trajectory.from_infos(ok)
    assert t.executed == 1 and t.image_wh == (640, 480)
    for bad in (None, {}, {"crop_tool": 3}, {"crop_tool": {"image_wh": "x"}},
                {"crop_tool": {"executed": "many"}}):
        assert R.Trajectory.from_infos(bad) is None


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("answer, solution, expected", [
    ("B", "B", 1.0), ("(B) a red car", "B", 1.0), ("b", "B", 0.0), ("C", "(B)", 0.0),
    ("Answer: D", "D", 1.0), ("a red car", "A", 0.0),
    ("3.5", "3.50", 1.0), ("about 1,204 people", "1204", 1.0), ("12.1", "12", 0.0),
    ("100.5", "100", 0.0), ("3.52", "3.5", 1.0), ("3.6", "3.5", 0.0), ("none", "7", 0.0),
    ("The Red  Car.", "red car", 1.0), ("Yes, it is.", "yes", 1.0), ("no", "yes", 0.0),
    ("stop", ["halt", "stop"], 1.0), ("stop", "<answer>stop</answer>", 1.0), ("7", 7, 1.0),
    ("a blue bus", "red car", 0.0),
    # VLM-R3's "/"-separated ground truths; a fraction stays whole
    ("couch", "sofa/couch", 1.0), ("sofa", "sofa / couch", 1.0), ("bed", "sofa/couch", 0.0),
    ("1", "1/2", 0.0), ("1/2", "1/2", 1.0),
    # math-verify on math notation (VLM-R3's verifier for its math data)
    ("$\\frac{1}{2}$", "0.5", 1.0), ("0.5", "\\frac{1}{2}", 1.0), ("x = 3", "3", 1.0),
    ("$\\sqrt{4}$", "2", 1.0), ("\\frac{1}{3}", "0.5", 0.0), ("2/4", "1/2", 1.0),
])
def test_accuracy_rules(answer, solution, expected):
    assert R.accuracy_reward(f"<think>t</think><answer>{answer}</answer>", solution) == expected


def test_accuracy_needs_an_answer_tag_and_a_solution():
    assert R.accuracy_reward("stop", "stop") == 0.0
    assert R.accuracy_reward("<answer>stop</answer>", None) == 0.0
    assert R.accuracy_reward("<answer></answer>", "stop") == 0.0


def test_accuracy_asks_the_judge_only_when_rules_cannot_decide():
    asked = []

    def judge(q, gold, pred):
        asked.append((q, gold, pred))
        return gold == "a crimson automobile"

    assert R.accuracy_reward("<answer>a red car</answer>", "a crimson automobile", judge,
                             "colour?") == 1.0
    assert R.accuracy_reward("<answer>C</answer>", "B", judge) == 0.0       # letters: rule
    assert R.accuracy_reward("<answer>12</answer>", "13", judge) == 0.0     # numbers: rule
    assert asked == [("colour?", "a crimson automobile", "a red car")]
    assert R.judge_requests("<answer>x</answer>", ["y", "B"]) == [("y", "x")]
    assert R.judge_requests("<answer>y</answer>", ["y", "z"]) == []


# ----------------------------------------------------------------------------- properties
TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<tool_call>", "</tool_call>",
        VISION_BLOCK, "[", "]", ",", "{", "}", '"bbox_2d":', "{Crop x ", "nan", "inf",
        "-1e308", "1e309", "(crop failed: x)\n", " ", "\n", "A", "7", "3.5"]
near_miss = st.lists(st.one_of(st.sampled_from(TAGS), st.integers(-2000, 2000).map(str),
                               st.text(max_size=5)), max_size=40).map("".join)
text_st = st.one_of(st.text(max_size=300), near_miss)
num = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))
box_st = st.one_of(st.none(), st.lists(num, min_size=0, max_size=6), st.text(max_size=5))
infos_st = st.one_of(
    st.none(), st.text(max_size=5),
    st.fixed_dictionaries({"crop_tool": st.fixed_dictionaries({
        "calls": st.lists(st.fixed_dictionaries({"box": box_st, "error": st.one_of(
            st.none(), st.text(max_size=5))}), max_size=5),
        "executed": st.one_of(st.none(), st.integers(-2, 5)),
        "image_wh": st.one_of(st.none(), st.lists(st.integers(0, 3000), min_size=2,
                                                  max_size=2)),
        "model_wh": st.one_of(st.none(), st.lists(st.integers(0, 3000), min_size=2,
                                                  max_size=2)),
        "space": st.sampled_from(["resized", "norm1000", "pixel", "bogus"]),
        "factor": st.integers(0, 64)})}))


def in_range(v, lo, hi):
    return isinstance(v, float) and math.isfinite(v) and lo <= v <= hi


@settings(max_examples=400, deadline=None)
@given(text=text_st, solution=st.one_of(st.none(), st.text(max_size=8), num,
                                        st.lists(st.text(max_size=4), max_size=3)),
       infos=infos_st, gt=st.one_of(st.none(), box_st, st.lists(box_st, max_size=3)))
def test_rewards_never_raise_and_stay_in_range(text, solution, infos, gt):
    t = R.Trajectory.from_infos(infos)
    assert R.format_reward(text) in (0.0, 0.5, 1.0)
    assert in_range(R.segment_length_reward(text), 0.0, 0.1)
    acc = R.accuracy_reward(text, solution)
    assert acc in (0.0, 1.0)
    assert in_range(R.crop_valid_reward(t), 0.0, 1.0)
    iou = R.region_iou_reward(t, gt)
    assert iou is None or in_range(iou, 0.0, 1.0)
    assert R.tool_reward(t, acc) in (0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(pred=st.text(max_size=40), gold=st.text(max_size=40))
def test_rule_match_never_raises(pred, gold):
    assert R.rule_match(pred, gold) in (True, False, None)


# ----------------------------------------------------------------------------- judge
def test_judge_over_http(judge_url):
    JudgeHandler.calls = 0
    judge = crop_settings.load({"SVP_JUDGE_URL": judge_url, "SVP_JUDGE_WORKERS": "4"}).judge()
    assert judge.workers == 4
    judge.prefetch([("q", "the crimson car", "a car"), ("q", "a bus", "a tram"),
                    ("q", "the crimson car", "a car")])
    assert JudgeHandler.calls == 2  # deduplicated, then cached
    assert judge("q", "the crimson car", "a car") is True
    assert judge("q", "a bus", "a tram") is False
    assert JudgeHandler.calls == 2
    assert R.accuracy_reward("<answer>a red car</answer>", "a crimson car", judge) == 1.0
    # a failing endpoint: no verdict, counted, never raised
    assert judge("q", "boom", "x") is None and judge.failures == 1
    dead = Judge("http://127.0.0.1:9/v1", model="m", timeout=0.5)
    assert dead("q", "a", "b") is None and dead.failures == 1
    assert R.accuracy_reward("<answer>b</answer>", "a thing", dead) == 0.0
    assert crop_settings.load({}).judge() is None
