"""REWARD_SET=vlmr3's accuracy: VLM-R3's rgrpo.py rules by source, their quirks included.

The expected values are worked out by hand from VLM-R3's code (``accuracy_reward``,
``textvqa_reward``, ``acc_verifier``, ``math_reward`` and ``utils/math.py``); the module was
also run against those functions themselves on 905 completions outside the project (0
differences; see the closing note of fidelity issue #26)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svp.croptool.vlmr3_accuracy import (
    judge_requests,
    math_canonical,
    math_equivalent,
    math_score,
    vlmr3_accuracy,
    vqa_normalise,
)


@pytest.mark.parametrize("text,normal", [
    ("Two", "2"),                       # number words
    ("Coca-Cola", "coca cola"),         # a hyphen inside a word: a space
    ("x - y (left)", "x y left"),       # next to a space: deleted
    ("Mr. Smith", "mr smith"),
    ("The Answer", "answer"),           # articles
    ("dont", "don't"),                  # contractions restored
    ("a dog's toy", "dog 's toy"),
    ("3.5 m, 1,000", "3.5 m 1000"),     # commas dropped, decimal points kept
    ("w." * 40, "w" * 33 + ".w" * 7 + "."),  # only the first 32 periods go (re.UNICODE count)
])
def test_vqa_normalisation(text, normal):
    assert vqa_normalise(text) == normal


@pytest.mark.parametrize("content,solution,source,value", [
    # textvqa: normalised; yes/no contained in a short answer without both words
    ("<answer>two</answer>", "2", "textvqa", 1.0),
    ("<answer>Coca-Cola</answer>", "<answer>coca cola</answer>", "textvqa", 1.0),
    ("<answer>nope</answer>", "no", "textvqa", 1.0),
    ("<answer>yes and no</answer>", "no", "textvqa", 0.0),
    ("<answer>" + "no " * 20 + "</answer>", "no", "textvqa", 0.0),   # 48 characters or more
    ("<answer>stop</answer>", "stop sign/stop", "textvqa", 1.0),
    # any other source: as written, one '/' truth at a time; one letter decides at once
    ("<answer>C</answer>", "B/C", "ScienceQA", 0.0),
    ("<answer>B</answer>", "B/C", None, 1.0),
    ("<answer>two</answer>", "2", "ScienceQA", 0.0),
    ("<answer>c</answer>", "C", None, 0.0),              # no rule: equality, which fails
    ("I think so.\nC", "C", None, 1.0),                  # no tags: the last line
    ("<answer>A</answer>\n<answer>C</answer>", "C", None, 1.0),   # the last answer
    # MMK12: exact after cleaning, math-verify, the boxed MATH equivalence
    ("<answer>\\boxed{\\frac12}</answer>", "0.5", "MMK12", 1.0),
    ("<answer>3/4</answer>", "\\frac{3}{4}", "MMK12", 1.0),
    ("<answer>Five.</answer>", "five", "MMK12", 1.0),
    ("<answer>6</answer>", "5", "MMK12", 0.0),
])
def test_accuracy_by_source(content, solution, source, value):
    assert vlmr3_accuracy(content, solution, source) == value


def test_math_equivalence_quirks():
    assert math_canonical("\\dfrac{1}{2}") == math_canonical("0.5") == "\\frac{1}{2}"
    assert math_canonical("k = 3") == "3" and math_canonical("10^{\\circ}") == "10"
    assert math_canonical("5 \\text{ cm}") == "5"
    # one '/' with parts that are not integers: the canonical form raises, raw equality
    assert math_equivalent("a/b", "a/b") and not math_equivalent("a/b", "a/b ")
    assert math_score("<answer>\\fbox{7}</answer>", "8") == 0.0


def test_judge_decides_what_no_rule_does_and_never_raises():
    calls = []

    def judge(q, gold, pred):
        calls.append((q, gold, pred))
        return True

    assert vlmr3_accuracy("<answer>a sofa</answer>", "couch", None, "what?", judge) == 1.0
    assert calls == [("what?", "couch", "a sofa")]
    assert vlmr3_accuracy("<answer>C</answer>", "B/C", None, "q", judge) == 0.0  # rule first
    assert judge_requests("<answer>kitten</answer>", "cat", "textvqa", "q") == [
        ("q", "cat", "kitten")]

    def broken(q, gold, pred):
        raise RuntimeError("judge down")

    assert vlmr3_accuracy("<answer>kitten</answer>", "cat", None, "q", broken) == 0.0
    assert vlmr3_accuracy("<answer>kitten</answer>", "kitten/cat", "textvqa", "q", broken) == 1.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.one_of(st.text(max_size=20), st.none(), st.integers(),
                                        st.lists(st.text(max_size=5), max_size=3)),
       st.sampled_from(["MMK12", "textvqa", "ScienceQA", None, 7]))
def test_never_raises_and_stays_in_range(content, solution, source):
    assert 0.0 <= vlmr3_accuracy(content, solution, source) <= 1.0
