"""Regional GRPO rewards as pure functions (no ms-swift, no torch).

Every function takes what one completion produced and returns a finite float in its
documented range (or ``None`` where the reward does not apply, which ms-swift skips). None
of them raises on any model output: text is parsed leniently and every box goes through
:func:`svp.croptool.geometry.check_box`. The formulas, ranges and default weights are
tabled in the README ("Regional GRPO") and in :data:`REWARDS`; they follow VLM-R3's code
where its paper and code differ (README "Regional GRPO"), and DeepEyes for the tool
reward gated on correctness.

What a completion is made of: the assistant text of the whole trajectory, in which the
crop-tool scheduler left ``<|vision_start|><|image_pad|><|vision_end|>`` after each executed
call and a ``(crop failed: ...)`` note after each rejected one;
:func:`svp.croptool.format.clean_text` removes both before any text reward looks at it.
Which crops were *executed* comes from the scheduler's records (:class:`Trajectory`), never
from counting tags in the text, which the model could write itself.
"""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass, field

from svp.croptool.format import clean_text, extract_answer
from svp.croptool.geometry import call_spans, check_box, from_space, parse_tool_calls

_STRUCTURE_RE = re.compile(  # the definition of structure(), which is faster
    r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.S)
_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_LETTER_GT_RE = re.compile(r"^\(?([A-Ja-j])\)?[.:)]?(?:\s.*)?$", re.S)
_LETTER_PRED_RE = re.compile(r"^\s*(?i:option\s+|answer\s*:?\s*)?\(?([A-J])\)?(?=$|[\s.:),])")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_MATHY = re.compile(r"[\\$^=]|\b(?:sqrt|pi|frac)\b")
_FRACTION = re.compile(r"\s*[-+]?\d+(?:\.\d+)?\s*/\s*[-+]?\d+(?:\.\d+)?\s*")
_PUNCT = str.maketrans("", "", string.punctuation.replace(".", ""))

# name -> (range, default weight, one-line formula); the README table is written from this
REWARDS: dict[str, tuple[str, float, str]] = {
    "rgrpo_accuracy": ("[0, 1]", 1.0,
                       "1 if the last <answer> matches the solution or one of its "
                       "'/'-separated alternatives (option letter; integer exactly, decimal "
                       "within rtol 1e-2; normalised exact; yes/no; math-verify on math "
                       "notation; else the LLM judge if configured), else 0"),
    "rgrpo_format": ("{0, 0.5, 1}", 0.5,
                     "0.5 for exactly <think>..</think><answer>..</answer>, +0.5 if also every "
                     "tool call parses and tags balance; 0 if the answer exceeds 1000 chars"),
    "rgrpo_crop_valid": ("[0, 1]", 0.25,
                         "fraction of crop calls that executed, lie >= 95% inside the image, "
                         "are >= 1 merged patch per side, < 90% of the image, not a repeat "
                         "(IoU >= 0.9 with an earlier call); 0 without calls"),
    "rgrpo_region_iou": ("[0, 1] or None", 0.5,
                         "mean over ground-truth boxes of the best IoU with an executed crop; "
                         "None (skipped) when the row has no gt_boxes"),
    "rgrpo_segment_length": ("[0, 0.1]", 1.0,
                             "min(0.1, 0.01 x characters of the shortest reasoning segment "
                             "between crop calls, whitespace collapsed, empty middle segments "
                             "dropped) (VLM-R3 code)"),
    "rgrpo_tool": ("{0, 1}", 0.5,
                   "1 if >= 1 crop was executed and accuracy >= 0.5, else 0 (DeepEyes' "
                   "conditional tool reward)"),
}

# VLM-R3's own set (its open_r1/rgrpo.py: accuracy, format, repeat, length; at most 2.1):
# ``REWARD_SET=vlmr3`` in recipes/rgrpo.sh.
VLMR3_REWARDS: dict[str, tuple[str, float, str]] = {
    "rgrpo_accuracy_vlmr3": ("{0, 1}", 1.0,
                             "VLM-R3's accuracy, by the row's `source` column: MMK12 math "
                             "(exact, math-verify, boxed MATH equivalence), textvqa (VQA answer "
                             "normalisation, yes/no contained), any other as written (`/` "
                             "truths; a one-letter mismatch is 0); the last line without "
                             "<answer>; the judge, else equality, for the rest "
                             "(svp/croptool/vlmr3_accuracy.py)"),
    "rgrpo_format_vlmr3": ("{0, 0.5}", 1.0,
                           "0.5 if the text ends with an <answer>..</answer> block (VLM-R3's "
                           "re.fullmatch of .*?<answer>.*?</answer>\\s*), else 0"),
    "rgrpo_regions_vlmr3": ("{0, 0.5}", 1.0,
                            "0.5 if the text holds >= 1 crop call and every {...} that mentions "
                            "bbox parses as JSON with a bbox_2d key, whatever its value, and the "
                            "answer is right (accuracy 1); else 0 (VLM-R3's repeat reward, "
                            "zeroed by its trainer unless the answer is right; <tool_call> "
                            "calls are read as the {\"bbox_2d\": ...} they stand for)"),
    "rgrpo_segment_length_vlmr3": ("[0, 0.1]", 1.0,
                                   "min(0.1, 0.01 x characters of the shortest reasoning "
                                   "segment), split only at {\"bbox_2d\": [...]} as VLM-R3's "
                                   "regex writes it (<tool_call> calls read as that form)"),
}
REWARD_SETS = {"ours": REWARDS, "vlmr3": VLMR3_REWARDS}
_VLMR3_FORMAT = re.compile(r".*?<answer>.*?</answer>\s*", re.S)
_VLMR3_JSON = re.compile(r"\{.*?\}", re.S)              # its repeat_reward's pattern_json
_VLMR3_BBOX = re.compile(r'\{"bbox_2d":\s*\[[^\]]*\]\}')  # its length_reward's pattern_bbox
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


def as_vlmr3_calls(text: str) -> str:
    """``text`` with every ``<tool_call>X</tool_call>`` written as the ``{"bbox_2d": X}`` it
    stands for (a DeepEyes call as its ``arguments.bbox_2d``), so VLM-R3's own rules apply to
    our call syntax unchanged; X that is not JSON stays as written, so it fails to parse as a
    malformed call does there. VLM-R3's own syntax is left as it is."""
    def one(m: re.Match) -> str:
        body = m.group(1).strip()
        try:
            doc = json.loads(body)
        except ValueError:
            return '{"bbox_2d": ' + body + "}"
        if isinstance(doc, dict):
            box = (doc.get("arguments") or {}).get("bbox_2d") if isinstance(
                doc.get("arguments"), dict) else doc.get("bbox_2d")
            return '{"bbox_2d": ' + json.dumps(box) + "}"
        return '{"bbox_2d": ' + body + "}"

    return _TOOL_CALL.sub(one, text)


# ----------------------------------------------------------------------------- text
def vlmr3_format_reward(text: str) -> float:
    r"""VLM-R3's format reward: 0.5 when the whole text matches ``.*?<answer>.*?</answer>\s*``
    (anything, then an answer block at the end), else 0."""
    return 0.5 if _VLMR3_FORMAT.fullmatch(text) else 0.0


def vlmr3_regions_reward(text: str, accuracy: float) -> float:
    """VLM-R3's region ("repeat") reward as its code computes it (``repeat_reward`` in its
    ``open_r1/rgrpo.py``) and its trainer applies it: every non-greedy ``{...}`` of the text
    that mentions "bbox" must load as JSON and have a ``bbox_2d`` key (its value is not
    looked at: ``{"bbox_2d": [10, 20, 30]}`` counts); 0.5 x min(1, distinct boxes), 0 at the
    first that fails; zeroed unless the answer is right (accuracy 1). ``<tool_call>`` calls
    are read as the ``{"bbox_2d": ...}`` they stand for (:func:`as_vlmr3_calls`)."""
    if accuracy != 1.0:
        return 0.0
    seen = set()
    for chunk in _VLMR3_JSON.findall(as_vlmr3_calls(text)):
        if "bbox" not in chunk:
            continue
        try:
            doc = json.loads(chunk)
            doc["bbox_2d"]
            seen.add(json.dumps(doc, sort_keys=True))
        except (ValueError, TypeError, KeyError, IndexError):
            return 0.0
    return 0.5 * min(1, len(seen))


def vlmr3_segment_length_reward(text: str, per_char: float = 0.01, cap: float = 0.1) -> float:
    r"""VLM-R3's length reward exactly as its code splits (``length_reward``): whitespace
    collapsed, split only at ``\{"bbox_2d":\s*\[[^\]]*\]\}`` (a call written with other
    spacing is text there), ``<tool_call>`` calls read as that form first. Our
    ``rgrpo_segment_length`` splits at every call syntax we accept instead."""
    thinking = as_vlmr3_calls(text).split("<answer>")[0].strip()
    thinking = thinking.replace("<think>", "").replace("</think>", "")
    thinking = re.sub(r"\s+", " ", thinking).strip()
    return _shortest_segment_reward([g.strip() for g in _VLMR3_BBOX.split(thinking)],
                                    per_char, cap)


def format_reward(text: str, max_answer_chars: int = 1000, cleaned: bool = False) -> float:
    """0.5 for the ``<think>`` then ``<answer>`` structure (once each, nothing around them),
    +0.5 when, in addition, tool-call tags balance and every call in the text parses.
    ``cleaned``: ``text`` already went through :func:`clean_text` (the batch did it once)."""
    parts = structure(text if cleaned else clean_text(text))
    if parts is None:
        return 0.0
    think, answer = parts
    if not think.strip() or not answer.strip():
        return 0.0
    if any(t in think + answer for t in ("<think>", "<answer>")):
        return 0.0
    if len(answer) > max_answer_chars:  # DeepEyes' anti-hacking rule
        return 0.0
    balanced = think.count("<tool_call>") == think.count("</tool_call>")
    calls_ok = all(c.error is None for c in parse_tool_calls(think))
    no_calls_in_answer = "<tool_call>" not in answer
    return 1.0 if balanced and calls_ok and no_calls_in_answer else 0.5


def structure(text: str) -> tuple[str, str] | None:
    """(think, answer) when ``text`` is ``<think>..</think><answer>..</answer>`` with only
    whitespace around and between, else None: exactly the groups of
    ``_STRUCTURE_RE.fullmatch`` (the think part ends at the first ``</think>`` that an
    ``<answer>`` follows; the answer at the final ``</answer>``), by substring search."""
    t = text.strip()
    if not (t.startswith("<think>") and t.endswith("</answer>")):
        return None
    body = t[len("<think>"):-len("</answer>")]
    at = body.find("</think>")
    while at >= 0:
        rest = body[at + len("</think>"):].lstrip()
        if rest.startswith("<answer>"):
            return body[:at], rest[len("<answer>"):]
        at = body.find("</think>", at + 1)
    return None


def segment_length_reward(text: str, per_char: float = 0.01, cap: float = 0.1,
                          cleaned: bool = False) -> float:
    """VLM-R3's length reward as its code computes it (``length_reward`` in its
    ``open_r1/rgrpo.py``): the reasoning (text before ``<answer>``, think tags removed) with
    every whitespace run collapsed to one space is split at each crop call (any accepted
    syntax, where VLM-R3 splits at ``{"bbox_2d": [...]}``); empty segments *between* calls
    are dropped, the first and the last are kept even when empty;
    ``min(cap, per_char * len(shortest segment))``."""
    text = text if cleaned else clean_text(text)
    reasoning = text.split("<answer>", 1)[0].strip().replace("<think>", "").replace(
        "</think>", "")
    reasoning = " ".join(reasoning.split())
    pieces, pos = [], 0
    for start, end in call_spans(reasoning):
        pieces.append(reasoning[pos:start].strip())
        pos = end
    pieces.append(reasoning[pos:].strip())
    return _shortest_segment_reward(pieces, per_char, cap)


def _shortest_segment_reward(pieces: list[str], per_char: float, cap: float) -> float:
    """VLM-R3's length rule on the reasoning cut at its calls: empty segments *between*
    calls dropped, the first and the last kept even when empty; ``min(cap, per_char x
    characters of the shortest)``."""
    kept = [p for i, p in enumerate(pieces) if p or i in (0, len(pieces) - 1)]
    return float(min(cap, per_char * min(len(p) for p in kept)))


# ----------------------------------------------------------------------------- crops
@dataclass
class Trajectory:
    """What the scheduler recorded: the calls as written (model space) and the geometry."""

    calls: list[dict] = field(default_factory=list)  # {"box": [4] | None, "error": str|None}
    image_wh: tuple[int, int] | None = None          # original image
    model_wh: tuple[int, int] | None = None          # main image as the model saw it
    space: str = "resized"
    factor: int = 28
    executed: int | None = None                      # crops appended; None = unknown
    # worked out once per trajectory: three rewards read them
    _checked: list | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_infos(cls, infos) -> Trajectory | None:
        """Read ``rollout_infos['crop_tool']`` (None when absent or unreadable)."""
        if not isinstance(infos, dict) or not isinstance(infos.get("crop_tool"), dict):
            return None
        d = infos["crop_tool"]
        try:
            calls = [c for c in d.get("calls", []) if isinstance(c, dict)]
            wh = tuple(int(v) for v in d["image_wh"]) if d.get("image_wh") else None
            mwh = tuple(int(v) for v in d["model_wh"]) if d.get("model_wh") else None
            return cls(calls, wh, mwh, str(d.get("space", "resized")), int(d.get("factor", 28)),
                       int(d["executed"]) if d.get("executed") is not None else None)
        except (TypeError, ValueError, KeyError):
            return None

    def checked_boxes(self) -> list[tuple[tuple | None, tuple | None, str | None]]:
        """Per call: (box in original pixels or None, the box clamped to the image or None,
        why it is not a box: :func:`check_box`'s reason, or None)."""
        if self._checked is None:
            w, h = self.image_wh or (0, 0)
            self._checked = [(px, *(check_box(px, w, h) if px is not None else (None, None)))
                             for px in self.pixel_boxes()]
        return self._checked

    def pixel_boxes(self) -> list[tuple | None]:
        """Each call's box in original pixels, unclamped (None for unreadable ones)."""
        out = []
        for c in self.calls:
            box = c.get("box")
            if c.get("error") or not _is_box(box) or self.image_wh is None:
                out.append(None)
                continue
            try:
                px = from_space(box, self.space, self.image_wh, self.model_wh or self.image_wh)
            except (ValueError, ZeroDivisionError, TypeError):
                px = None
            out.append(px if px is not None and all(math.isfinite(v) for v in px) else None)
        return out


def _is_box(box) -> bool:
    if not isinstance(box, list | tuple) or len(box) != 4:
        return False
    for v in box:  # a loop, not all(genexpr): this runs for every call of every rollout
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
    return True


def box_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes; 0 for degenerate ones."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def call_verdicts(traj: Trajectory, inside_frac: float = 0.95, whole_frac: float = 0.9,
                  repeat_iou: float = 0.9) -> list[str | None]:
    """Per call: None if valid, else why not (the reasons crop_valid counts against)."""
    verdicts: list[str | None] = []
    seen: list[tuple] = []
    w, h = traj.image_wh or (0, 0)
    mw, mh = traj.model_wh or traj.image_wh or (0, 0)
    for call, (px, clamped, reason) in zip(traj.calls, traj.checked_boxes(), strict=True):
        if px is None:
            verdicts.append(call.get("error") or "unreadable box")
            continue
        if clamped is None:
            verdicts.append(reason)
            continue
        area = (px[2] - px[0]) * (px[3] - px[1])
        inner = (clamped[2] - clamped[0]) * (clamped[3] - clamped[1])
        if inner < inside_frac * area:
            verdicts.append("partly outside the image")
        elif min((clamped[2] - clamped[0]) * mw / w,
                 (clamped[3] - clamped[1]) * mh / h) < traj.factor:
            verdicts.append("smaller than one merged patch")
        elif inner >= whole_frac * w * h:
            verdicts.append("the whole image")
        elif any(box_iou(clamped, s) >= repeat_iou for s in seen):
            verdicts.append("repeats an earlier crop")
        else:
            verdicts.append(None)
        seen.append(clamped)
    return verdicts


def crop_valid_reward(traj: Trajectory | None, **kw) -> float:
    """Fraction of valid crop calls (0 without calls or records)."""
    if traj is None or not traj.calls:
        return 0.0
    verdicts = call_verdicts(traj, **kw)
    return sum(v is None for v in verdicts) / len(verdicts)


def region_iou_reward(traj: Trajectory | None, gt_boxes) -> float | None:
    """Mean over ground-truth boxes (original pixels) of the best IoU with a crop."""
    gts = normalise_gt_boxes(gt_boxes)
    if not gts:
        return None
    crops = []
    if traj is not None and traj.image_wh:
        crops = [clamped for _, clamped, _ in traj.checked_boxes() if clamped is not None]
    return sum(max((box_iou(g, c) for c in crops), default=0.0) for g in gts) / len(gts)


def normalise_gt_boxes(gt_boxes) -> list[tuple]:
    """``[x1,y1,x2,y2]`` or a list of them -> list of proper boxes (bad entries dropped)."""
    if gt_boxes is None:
        return []
    if _is_box(gt_boxes):
        gt_boxes = [gt_boxes]
    if not isinstance(gt_boxes, list | tuple):
        return []
    return [tuple(float(v) for v in b) for b in gt_boxes
            if _is_box(b) and b[2] > b[0] and b[3] > b[1]]


def tool_reward(traj: Trajectory | None, accuracy: float) -> float:
    """1 if at least one crop was executed and the answer is right (>= 0.5), else 0."""
    executed = traj.executed if traj is not None and traj.executed is not None else 0
    return 1.0 if executed >= 1 and accuracy >= 0.5 else 0.0


# ----------------------------------------------------------------------------- accuracy
def normalise(text: str) -> str:
    """Lower case, no punctuation (decimal points kept), no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\.(?!\d)", " ", text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _number(text: str) -> float | None:
    t = text.strip().replace("$", "").replace("%", "").strip()
    if not _NUMBER_RE.fullmatch(t):
        return None
    try:
        v = float(t.replace(",", ""))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def alternatives(gold: str) -> list[str]:
    """VLM-R3's ``/``-separated ground truths (``"sofa/couch"``): each part is an acceptable
    answer. A fraction (``3/4``) or a LaTeX / math expression stays whole (VLM-R3 splits
    those too, outside its math source; we do not, or ``1/2`` would accept ``1``)."""
    if "/" not in gold or _MATHY.search(gold) or _FRACTION.fullmatch(gold):
        return [gold]
    parts = [p.strip() for p in gold.split("/")]
    return [p for p in parts if p] or [gold]


def solutions_of(solution) -> list[str]:
    """The acceptable answers: a string (``<answer>`` tags stripped; ``/``-separated
    alternatives split, :func:`alternatives`), a number, or a list of them."""
    if solution is None:
        return []
    items = solution if isinstance(solution, list | tuple) else [solution]
    out = []
    for s in items:
        if isinstance(s, bool) or s is None:
            continue
        if isinstance(s, int | float):
            if math.isfinite(s):
                out.append(repr(s) if isinstance(s, float) else str(s))
            continue
        if isinstance(s, str):
            s = extract_answer(s) or s
            if s.strip():
                out.extend(alternatives(s.strip()))
    return out


def math_equal(pred: str, gold: str) -> bool | None:
    """``math-verify``'s verdict (the verifier VLM-R3 uses for its math data) on answers that
    carry math notation (LaTeX, ``$``, fractions, powers, ``=``); None when either side does
    not, does not parse, or the verifier fails (it never raises here)."""
    if not (_MATHY.search(gold) or _MATHY.search(pred) or _FRACTION.fullmatch(gold)
            or _FRACTION.fullmatch(pred)):
        return None
    try:
        from math_verify import parse, verify

        g, p = parse(gold), parse(pred)
        if not g or not p:
            return None
        return bool(verify(g, p))
    except Exception:  # noqa: BLE001 (sympy and its timeouts can fail in many ways)
        return None


def rule_match(pred: str, gold: str, rtol: float = 1e-2) -> bool | None:
    """True / False when a rule decides, None when only a judge could (free-form text)."""
    letter = _LETTER_GT_RE.match(gold.strip())
    if letter and (len(gold.strip()) <= 4 or gold.strip()[1:3] in (". ", ") ")):
        p = _LETTER_PRED_RE.match(pred)
        return bool(p) and p.group(1).upper() == letter.group(1).upper()
    g = _number(gold)
    if g is not None:
        nums = _NUMBER_RE.findall(pred)
        if not nums:
            return False
        try:
            p = float(nums[-1].replace(",", ""))
        except ValueError:
            return False
        if "." not in gold and "e" not in gold.lower():  # a count: the exact integer
            return p == g
        return math.isfinite(p) and abs(p - g) <= max(1e-9, rtol * abs(g))
    np_, ng = normalise(pred), normalise(gold)
    if np_ == ng:
        return True
    if ng in ("yes", "no"):
        return np_.split(" ", 1)[0] == ng if np_ else False
    return None


def judge_requests(text: str, solution, rtol: float = 1e-2) -> list[tuple[str, str]]:
    """The (gold, prediction) pairs :func:`accuracy_reward` would ask a judge about, so a
    batch can be judged concurrently beforehand."""
    pred = extract_answer(clean_text(text))
    golds = solutions_of(solution)
    if not pred or not golds:
        return []
    verdicts = [rule_match(pred, g, rtol) for g in golds]
    if any(verdicts) or any(math_equal(pred, g) for g in golds):
        return []
    return [(g, pred) for g, v in zip(golds, verdicts, strict=True) if v is None]


def accuracy_reward(text: str, solution, judge=None, question: str = "",
                    rtol: float = 1e-2, cleaned: bool = False) -> float:
    """1.0 if the last ``<answer>`` matches any acceptable solution, else 0.0. Rules first
    (letter, number, normalised exact, yes/no), then ``math-verify`` on math notation
    (:func:`math_equal`); free-form mismatches go to ``judge(question, gold, pred) -> bool |
    None`` when one is given, and count as wrong otherwise."""
    pred = extract_answer(text if cleaned else clean_text(text))
    golds = solutions_of(solution)
    if pred is None or not pred or not golds:
        return 0.0
    undecided = []
    for gold in golds:
        verdict = rule_match(pred, gold, rtol)
        if verdict:
            return 1.0
        if math_equal(pred, gold):
            return 1.0
        if verdict is None:
            undecided.append(gold)
    if judge is not None and undecided:
        for gold in undecided:
            if judge(question, gold, pred):
                return 1.0
    return 0.0


def main(argv: list[str] | None = None) -> int:
    """``python -m svp.croptool.rewards [--set ours|vlmr3]``: the reward names and their
    default weights, one line each, in table order (what ``recipes/rgrpo.sh`` passes for its
    ``REWARD_SET``; ours: :data:`REWARDS`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m svp.croptool.rewards")
    ap.add_argument("--set", default="ours", choices=sorted(REWARD_SETS))
    table = REWARD_SETS[ap.parse_args(argv).set]
    print(" ".join(table))
    print(" ".join(f"{weight:g}" for _, weight, _ in table.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
