"""Crop-tool geometry (pure) : parsing every syntax, box checks, coordinate spaces, sizes."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from svp.croptool.geometry import (
    CropPolicy,
    check_box,
    format_tool_call,
    from_space,
    model_input_size,
    parse_tool_calls,
    to_space,
)


def test_every_syntax_is_parsed_in_order():
    text = ('a {Crop person 1 [0.00, 141.43, 79.23, 480.00]} b <tool_call>[1, 2, 3, 4]</tool_call> '
            'c {"bbox_2d": [5, 6, 7.5, 8]} d <tool_call>{"name": "crop", "arguments": '
            '{"bbox_2d": [9, 10, 11, 12]}}</tool_call> e')
    calls = parse_tool_calls(text)
    assert [c.form for c in calls] == ["crop", "tool_call", "bbox_2d", "tool_call_json"]
    assert [c.box for c in calls] == [(0.0, 141.43, 79.23, 480.0), (1, 2, 3, 4), (5, 6, 7.5, 8),
                                      (9, 10, 11, 12)]
    assert calls[0].desc == "person 1"
    assert all(c.error is None for c in calls)
    assert text[calls[1].start:calls[1].end] == "<tool_call>[1, 2, 3, 4]</tool_call>"


def test_arguments_as_json_string_and_bbox_inside_tool_call_counted_once():
    text = '<tool_call>{"name": "crop", "arguments": "{\\"bbox_2d\\": [1, 2, 30, 40]}"}</tool_call>'
    calls = parse_tool_calls(text)
    assert len(calls) == 1 and calls[0].box == (1, 2, 30, 40)


@pytest.mark.parametrize("text, error", [
    ("<tool_call>[1, 2, x, 4]</tool_call>", "non-numeric coordinate 'x'"),
    ("<tool_call>[1, 2, 3]</tool_call>", "expected 4 coordinates, got 3"),
    ("<tool_call>[1, 2, nan, 4]</tool_call>", "not finite"),
    ("<tool_call>[1, 2, inf, 4]</tool_call>", "not finite"),
    ("<tool_call>[1, 2, 3, 4</tool_call>", "unterminated"),
    ("<tool_call>crop it</tool_call>", "neither a box list nor valid JSON"),
    ('<tool_call>{"name": "crop"}</tool_call>', "no bbox_2d"),
    ('<tool_call>{"arguments": {"bbox_2d": [1, "a", 2, 3]}}</tool_call>', "non-numeric"),
    ("{Crop thing [1, 2, three, 4]}", "non-numeric coordinate 'three'"),
])
def test_unreadable_calls_carry_a_reason(text, error):
    (call,) = parse_tool_calls(text)
    assert call.box is None and error in call.error


@pytest.mark.parametrize("box, outcome", [
    ((10, 20, 30, 40), (10, 20, 30, 40)),
    ((-5, -5, 30, 40), (0, 0, 30, 40)),                      # partly outside: clamped
    ((90, 50, 200, 300), (90, 50, 100, 80)),
    ((30, 20, 10, 40), "swapped corners"),
    ((10, 40, 30, 20), "swapped corners"),
    ((10, 20, 10, 40), "zero-area"),
    ((10, 20, 30, 20), "zero-area"),
    ((120, 10, 150, 40), "outside the 100x80 image"),
    ((float("nan"), 0, 1, 1), "not finite"),
    (("a", 0, 1, 1), "non-numeric"),
    ((1, 2, 3), "expected 4"),
    (None, "non-numeric"),
])
def test_check_box_outcomes(box, outcome):
    checked, reason = check_box(box, 100, 80)
    if isinstance(outcome, tuple):
        assert checked == tuple(float(v) for v in outcome) and reason is None
    else:
        assert checked is None and outcome in reason


def test_spaces_convert_both_ways():
    orig, model = (640, 480), (588, 448)
    box = (64, 48, 320, 240)
    assert to_space(box, "norm1000", orig, model) == (100, 100, 500, 500)
    r = to_space(box, "resized", orig, model)
    assert r == pytest.approx((58.8, 44.8, 294, 224))
    assert from_space(r, "resized", orig, model) == pytest.approx(box)
    assert to_space(box, "pixel", orig, model) == box
    with pytest.raises(ValueError, match="unknown coordinate space"):
        to_space(box, "percent", orig, model)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list('<>/[]{},."0123456789 abcnx_-:') + [
    "<tool_call>", "</tool_call>", "{Crop ", '"bbox_2d"', "nan", "inf", '"arguments"']),
    max_size=40).map("".join))
def test_parser_never_raises(text):
    for call in parse_tool_calls(text):
        assert (call.box is None) != (call.error is None)
        assert 0 <= call.start < call.end <= len(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000), st.floats(0, 1), st.floats(0, 1),
       st.floats(0, 1), st.floats(0, 1), st.sampled_from(["qwen2_5_vl", "qwen3_vl"]))
def test_model_space_round_trip(w, h, a, b, c, d, family):
    assume(max(w, h) / min(w, h) < 190)  # the Qwen processors refuse ratios over 200
    policy = CropPolicy(family)
    box = (a * w, b * h, c * w, d * h)
    back = policy.box_to_pixels(policy.box_to_model(box, (w, h)), (w, h))
    assert back == pytest.approx(box, abs=1e-6 * max(w, h))


def test_sizes_follow_the_policy_and_the_patch_grid():
    p25, p3 = CropPolicy("qwen2_5_vl"), CropPolicy("qwen3_vl")
    assert (p25.factor, p3.factor) == (28, 32)
    assert p25.main_size(640, 480) == (588, 448)  # shorter side 448, width snapped to 28
    assert p3.main_size(640, 480) == (608, 448)
    assert p25.main_size(480, 1000) == (448, 924)
    # crops: kept when the shorter side <= 448 (snapped), downscaled otherwise; aspect kept
    assert p25.crop_size(200, 100) == (196, 112)
    w, h = p25.crop_size(1800, 900)
    assert h == 448 and w == 896
    stock = model_input_size(640, 480, 28, 4 * 28 ** 2, 16384 * 28 ** 2)
    assert CropPolicy("qwen2_5_vl", main_short=0).main_size(640, 480) == stock
    for size in [(1, 1), (16, 3000), (3000, 17), (28, 28)]:
        for p in (p25, p3):
            for f in (p.main_size, p.crop_size):
                cw, ch = f(*size)
                assert cw % p.factor == 0 and ch % p.factor == 0 and cw > 0 and ch > 0


def test_execute_cuts_the_original_pixels():
    img = Image.new("RGB", (640, 480))
    img.paste((255, 0, 0), (64, 48, 320, 240))
    policy = CropPolicy("qwen3_vl")
    crop, px, reason = policy.execute(img, (100, 100, 500, 500))  # 0..1000 space
    assert reason is None and px == pytest.approx((64, 48, 320, 240))
    assert crop.size == policy.crop_size(256, 192)
    assert crop.getpixel((crop.width // 2, crop.height // 2)) == (255, 0, 0)
    # a tiny box grows to one merged patch (32 px) inside the image; the processor's own
    # minimum (4 merged patches) then upsizes it to 64x64
    crop, px, _ = policy.execute(img, (999, 999, 1000, 1000))
    assert crop.size == (64, 64) and px[2] <= 640
    # a one-pixel strip across the whole width gets context instead of an impossible ratio
    strip, _, reason = policy.execute(Image.new("RGB", (6000, 400)), (0, 500, 1000, 502))
    assert reason is None and strip.width / strip.height < 200
    for bad, why in [((500, 100, 100, 500), "swapped"), ((5, 5, 5, 9), "zero-area"),
                     ((1200, 10, 1300, 20), "outside"), ((math.nan, 0, 1, 1), "not finite"),
                     (("x", 0, 1, 1), "bad box")]:
        crop, px, reason = policy.execute(img, bad)
        assert crop is None and px is None and why in reason


def test_canonical_format():
    assert format_tool_call((1.4, 2.6, 30, 40.5)) == "<tool_call>[1, 3, 30, 40]</tool_call>"


def vlmr3_crop_size(cw: int, ch: int, w: int, h: int) -> tuple[int, int]:
    """VLM-R3's agent (vllm_rgrpo_trainer.py, _crop_and_save_region), restated as the oracle:
    scale by the crop's share of the image, then smart_resize within [4, 1024] x 28^2."""
    from qwen_vl_utils import smart_resize

    r = cw * ch / (w * h)
    scale = 2.0 if r < 0.125 else 1.0 if r >= 0.5 else 2.0 - (r - 0.125) / 0.375
    h1, w1 = smart_resize(int(scale * ch), int(scale * cw), factor=28,
                          min_pixels=4 * 28 * 28, max_pixels=1024 * 28 * 28)
    return w1, h1


@pytest.mark.parametrize("box", [(100, 100, 200, 200), (100, 100, 600, 500),
                                 (0, 0, 900, 760), (10, 10, 40, 600)])
def test_vlmr3_zoom_sizes_crops_as_its_agent(box):
    """SVP_CROP_ZOOM=vlmr3: small crops doubled, large ones kept, within VLM-R3's budget;
    the default keeps a crop as cut (short side capped)."""
    from svp.croptool.settings import load

    img = Image.new("RGB", (1000, 800))
    zoomed = load({"SVP_CROP_ZOOM": "vlmr3"}).policy("qwen2_5_vl", environ={})
    crop = zoomed.crop(img, box)
    cut = img.crop(tuple(int(v) for v in zoomed.grow(box, 1000, 800)))
    assert crop.size == vlmr3_crop_size(*cut.size, 1000, 800)
    ours = load({}).policy("qwen2_5_vl", environ={}).crop(img, box)
    assert ours.size == CropPolicy("qwen2_5_vl").crop_size(*cut.size)
    if box == (100, 100, 200, 200):
        assert crop.size == (196, 196) and ours.size == (112, 112)  # x2 zoom vs kept as cut


def _vlmr3_agent_rectangle(box, width, height, model_w, model_h):
    """VLM-R3's agent, written out from its code (``bbox_transform``, ``get_img_crop``, then
    the zoom and ``smart_resize`` of ``_crop_and_save_region``, whose exception fails the
    call): the PIL rectangle it cuts for a box in the resized image, or None."""
    x1, x2 = int(box[0] * width / model_w), int(box[2] * width / model_w)
    y1, y2 = int(box[1] * height / model_h), int(box[3] * height / model_h)
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width - 1, x2), min(height - 1, y2)
    if x1 >= x2 or y1 >= y2:
        return None
    try:
        vlmr3_crop_size(x2 + 1 - x1, y2 + 1 - y1, width, height)
    except ValueError:
        return None
    return (x1, y1, x2 + 1, y2 + 1)


@pytest.mark.parametrize("size", [(1000, 800), (4000, 3000), (640, 6000), (333, 517)])
def test_vlmr3_cut_is_its_agents_rectangle(size):
    """SVP_CROP_CUT=vlmr3 (with SVP_CROP_ZOOM=vlmr3): for boxes as the model writes them
    (whole numbers, some outside the image, thin, reversed), the crop is exactly the
    rectangle VLM-R3's agent cuts, and fails exactly where it fails; ours (the default)
    widens thin boxes instead."""
    import random

    from svp.croptool.settings import load

    rng = random.Random(size[0])
    img = Image.new("RGB", size)
    pol = load({"SVP_CROP_CUT": "vlmr3", "SVP_CROP_ZOOM": "vlmr3",
                "SVP_CROP_MAIN_SHORT": "0"}).policy(
        "qwen2_5_vl", environ={"MAX_PIXELS": str(1280 * 28 * 28)})
    mw, mh = pol.main_size(*size)
    assert (mw, mh) != size
    agree = failed = 0
    for _ in range(3000):
        x1, y1 = rng.randint(-20, mw + 5), rng.randint(-20, mh + 5)
        box = (x1, y1, x1 + rng.choice([0, 1, 2, 5, 40, 300]),
               y1 + rng.choice([-3, 0, 1, 3, 40, 300]))
        want = _vlmr3_agent_rectangle(box, *size, mw, mh)
        crop, px, _ = pol.execute(img, box)
        got = None if crop is None else pol.rectangle(px, *size)[0]
        assert got == want, (box, got, want)
        agree += 1
        failed += want is None
    assert agree == 3000 and 300 < failed < 2700
    ours = load({"SVP_CROP_MAIN_SHORT": "0"}).policy(
        "qwen2_5_vl", environ={"MAX_PIXELS": str(1280 * 28 * 28)})
    thin = (10, 10, 11, 60)  # one model pixel wide: VLM-R3 may keep a sliver, ours widens it
    rect = ours.rectangle(ours.box_to_pixels(thin, size), *size)[0]
    assert rect[2] - rect[0] >= 28
