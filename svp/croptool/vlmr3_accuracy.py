"""VLM-R3's accuracy reward, as its ``open_r1/rgrpo.py`` decides it (``REWARD_SET=vlmr3``).

Upstream picks the rule by the row's ``source``: ``MMK12`` rows are math (exact text, then
``math-verify``, then the MATH dataset's string equivalence on the last ``\\boxed{}``),
``textvqa`` rows use the VQA evaluation's answer normalisation (EvalAI's answer processor:
numbers spelled out, articles, contractions, punctuation) and accept a short answer that
contains the yes / no truth, and every other row is compared as written, ``/``-separated
truths one by one, with a single-letter mismatch deciding 0 at once. Without ``<answer>``
tags the last line is the answer. What no rule decides goes to an LLM judge; when that call
fails upstream falls back to plain equality, which is what happens here without a judge.

Pure functions, no model or ms-swift code; they never raise (a failure scores 0 where
upstream's would stop training). Written from the upstream code's behaviour, its quirks
kept: the answer is re-normalised once per truth tried, the period rule removes at most 32
periods (``re.UNICODE`` passed as ``count``), and a truth with one ``/`` whose parts are not
integers makes the MATH equivalence fall back to raw equality.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: judge(question, gold, prediction) -> True / False, or None when it cannot say
Judge = Callable[[str, str, str], "bool | None"]

# --------------------------------------------------------------------- VQA answer normalisation
# The answer-normalisation tables of the VQA evaluation (vqaEval.py of the VQA API, carried by
# EvalAI's answer processor and by VLM-R3's rgrpo.py): data, reproduced so scores match.
CONTRACTIONS = {
    "'ow'sat": "'ow's'at", "'ows'at": "'ow's'at", "I'dve": "I'd've", "Id've": "I'd've",
    'Im': "I'm", 'Ive': "I've", 'aint': "ain't", 'arent': "aren't", 'cant': "can't",
    "couldn'tve": "couldn't've", 'couldnt': "couldn't", "couldnt've": "couldn't've",
    'couldve': "could've", 'didnt': "didn't", 'doesnt': "doesn't", 'dont': "don't",
    "hadn'tve": "hadn't've", 'hadnt': "hadn't", "hadnt've": "hadn't've", 'hasnt': "hasn't",
    'havent': "haven't", "he'dve": "he'd've", 'hed': "he'd", "hed've": "he'd've", 'hes': "he's",
    'howd': "how'd", 'howll': "how'll", 'hows': "how's", 'isnt': "isn't", "it'dve": "it'd've",
    'itd': "it'd", "itd've": "it'd've", 'itll': "it'll", "let's": "let's", 'maam': "ma'am",
    "mightn'tve": "mightn't've", 'mightnt': "mightn't", "mightnt've": "mightn't've",
    'mightve': "might've", 'mustnt': "mustn't", 'mustve': "must've", 'neednt': "needn't",
    'notve': "not've", 'oclock': "o'clock", 'oughtnt': "oughtn't", "ow's'at": "'ow's'at",
    'shant': "shan't", "she'dve": "she'd've", "she's": "she's", "shed've": "she'd've",
    "shouldn'tve": "shouldn't've", 'shouldnt': "shouldn't", "shouldnt've": "shouldn't've",
    'shouldve': "should've", "somebody'd": 'somebodyd', "somebody'dve": "somebody'd've",
    "somebodyd've": "somebody'd've", 'somebodyll': "somebody'll", 'somebodys': "somebody's",
    "someone'dve": "someone'd've", 'someoned': "someone'd", "someoned've": "someone'd've",
    'someonell': "someone'll", 'someones': "someone's", "something'dve": "something'd've",
    'somethingd': "something'd", "somethingd've": "something'd've", 'somethingll': "something'll",
    'thats': "that's", "there'dve": "there'd've", 'thered': "there'd", "thered've": "there'd've",
    'therere': "there're", 'theres': "there's", "they'dve": "they'd've", 'theyd': "they'd",
    "theyd've": "they'd've", 'theyll': "they'll", 'theyre': "they're", 'theyve': "they've",
    'twas': "'twas", 'wasnt': "wasn't", "we'dve": "we'd've", "wed've": "we'd've",
    'werent': "weren't", 'weve': "we've", 'whatll': "what'll", 'whatre': "what're",
    'whats': "what's", 'whatve': "what've", 'whens': "when's", 'whered': "where'd",
    'wheres': "where's", 'whereve': "where've", "who'dve": "who'd've", 'whod': "who'd",
    "whod've": "who'd've", 'wholl': "who'll", 'whos': "who's", 'whove': "who've",
    'whyll': "why'll", 'whyre': "why're", 'whys': "why's", 'wont': "won't",
    "wouldn'tve": "wouldn't've", 'wouldnt': "wouldn't", "wouldnt've": "wouldn't've",
    'wouldve': "would've", "y'all'dve": "y'all'd've", "y'alld've": "y'all'd've",
    "y'allll": "y'all'll", 'yall': "y'all", "yall'd've": "y'all'd've", "yall'll": "y'all'll",
    "you'dve": "you'd've", 'youd': "you'd", "youd've": "you'd've", 'youll': "you'll",
    'youre': "you're", 'youve': "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset(("a", "an", "the"))
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
_PERIOD = re.compile(r"\.(?!\d)")        # a period not before a digit
_DIGIT_COMMA = re.compile(r"(?<=\d),+(?=\d)")
_PERIODS_REMOVED = 32  # upstream passes re.UNICODE (32) where sub() takes its count


def vqa_normalise(text: str) -> str:
    """One pass of the VQA answer processor: lower case, ``,`` and ``?`` dropped, ``'s``
    split off, punctuation removed (glued to a space or a digit-comma anywhere: deleted;
    else: a space), periods not before a digit deleted (the first 32), number words to
    digits, articles dropped, contractions restored, single spaces."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    glued_anywhere = _DIGIT_COMMA.search(text) is not None
    out = text
    for p in PUNCTUATION:
        glued = glued_anywhere or (p + " ") in text or (" " + p) in text
        out = out.replace(p, "" if glued else " ")
    out = _PERIOD.sub("", out, count=_PERIODS_REMOVED)
    words = [NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


# --------------------------------------------------------------------- answers and truths
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_ANSWER_LINE = re.compile(r"<answer>(.*?)</answer>")  # the truth's: one line


def _truth(solution: str) -> str:
    m = _ANSWER_LINE.search(solution)
    return m.group(1).strip() if m else solution.strip()


def _answer(content: str) -> str:
    """The last ``<answer>`` block, or the completion's last line."""
    found = _ANSWER.findall(content)
    return found[-1].strip() if found else content.strip().split("\n")[-1]


def _fallback(judge: Judge | None, question: str, gold: str, pred: str) -> float:
    """Upstream's LLM judge; equality when there is none or it cannot say (what upstream
    does when its judge call fails)."""
    if judge is not None:
        try:
            verdict = judge(question, gold, pred)
        except Exception:  # noqa: BLE001 - a judge failure is upstream's fallback too
            verdict = None
        if verdict is not None:
            return 1.0 if verdict else 0.0
    return 1.0 if pred == gold else 0.0


def textvqa_score(content: str, solution: str, question: str = "",
                  judge: Judge | None = None) -> float:
    """Upstream's ``textvqa_reward``: each ``/`` truth normalised and compared with the
    answer (normalised again for every truth); a yes / no truth accepts any answer under 48
    characters that contains it and not both words (``nope`` counts as no)."""
    truth = _truth(solution)
    pred = _answer(content).lower()
    for gold in (g.strip().lower() for g in truth.split("/")):
        gold = vqa_normalise(gold)
        pred = vqa_normalise(pred)
        if gold == pred:
            return 1.0
        if gold in ("yes", "no") and gold in pred and not (
                "yes" in pred and "no" in pred) and len(pred) < 48:
            return 1.0
    return _fallback(judge, question, truth, pred)


def verifier_score(content: str, solution: str, question: str = "",
                   judge: Judge | None = None) -> float:
    """Upstream's ``acc_verifier`` (every source but MMK12 and textvqa): the answer equal to
    one ``/`` truth as written; a one-character truth and answer that differ (case aside)
    end it at 0, even when a later truth would match."""
    truth = _truth(solution)
    pred = _answer(content)
    for gold in (g.strip() for g in truth.split("/")):
        if gold == pred:
            return 1.0
        if len(gold) == 1 and len(pred) == 1 and gold.lower() != pred.lower():
            return 0.0
    return _fallback(judge, question, truth, pred)


# --------------------------------------------------------------------- MMK12: math
def math_clean(text: str) -> str:
    """Upstream's ``clean_text``: the last ``<answer>`` (else the text), a line break after
    white space dropped and any other turned into a space, stripped, a final period
    removed, lower case."""
    found = _ANSWER.findall(text)
    if found:
        text = found[-1]
    for ch in ("\n", "\r"):
        text = re.sub(r"(?<=\s)" + re.escape(ch), "", text)
        text = re.sub(r"(?<!\s)" + re.escape(ch), " ", text)
    return text.strip().rstrip(".").lower()


def last_boxed(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces; ``\\boxed X``
    (space form) up to a ``$``; None when there is none or its braces never close."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def unbox(boxed: str) -> str:
    """The inside of :func:`last_boxed`'s result; ValueError for anything but ``\\boxed``
    (upstream asserts, and its caller scores 0)."""
    if "\\boxed " in boxed:
        if not boxed.startswith("\\boxed "):
            raise ValueError(boxed)
        return boxed[len("\\boxed "):]
    if not (boxed.startswith("\\boxed{") and boxed.endswith("}")):
        raise ValueError(boxed)
    return boxed[len("\\boxed{"):-1]


def _braced_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{b}`` -> ``\\frac{1}{b}``; a ``\\frac``
    with fewer than two characters after it leaves the string as it was."""
    head, *rest = s.split("\\frac")
    out = head
    for part in rest:
        out += "\\frac"
        if part[0] == "{":  # IndexError on an empty part, as upstream's
            out += part
            continue
        if len(part) < 2:
            return s
        a, b, tail = part[0], part[1], part[2:]
        out += "{" + a + "}" + (b + tail if b == "{" else "{" + b + "}" + tail)
    return out


def _slash_fraction(s: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}``; parts that are not integers raise ValueError (upstream's
    int() is outside its guard), integers that do not print back leave it alone."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = int(parts[0]), int(parts[1])
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if s == f"{a}/{b}" else s


def _braced_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    head, *rest = s.split("\\sqrt")
    return head + "".join("\\sqrt" + (p if p[0] == "{" else "{" + p[0] + "}" + p[1:])
                          for p in rest)


def math_canonical(s: str) -> str:
    """The MATH dataset's answer normalisation (hendrycks ``strip_string``, as upstream's
    ``utils/math.py`` has it). Raises on the inputs where that code raises."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # units on the right
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError(s)
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _braced_sqrt(s).replace(" ", "")
    s = _braced_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_fraction(s)


def math_equivalent(a: str, b: str) -> bool:
    """Upstream's ``is_equiv``: canonical forms equal, or the raw strings when either side
    cannot be canonicalised."""
    try:
        return math_canonical(a) == math_canonical(b)
    except Exception:  # noqa: BLE001 - upstream compares the raw strings then
        return a == b


def math_score(content: str, solution: str) -> float:
    """Upstream's ``math_reward`` (MMK12 rows): both sides cleaned; equal text, else
    ``math-verify`` (prediction parsed first, as upstream calls it), else the last boxed
    answer MATH-equivalent to the truth."""
    pred, gold = math_clean(content), math_clean(solution)
    if pred == gold:
        return 1.0
    try:
        from math_verify import parse, verify

        if float(verify(parse(pred), parse(gold))) > 0:
            return 1.0
    except Exception:  # noqa: BLE001 - would stop upstream's training; 0 here
        return 0.0
    try:
        boxed = last_boxed(pred)
        answer = unbox(boxed) if boxed is not None else pred
        return 1.0 if math_equivalent(answer, gold) else 0.0
    except Exception:  # noqa: BLE001 - upstream prints it and scores 0
        return 0.0


# --------------------------------------------------------------------- the reward
def solution_text(solution) -> str:
    """Upstream's solution is a string; a list of truths reads as its ``/`` alternatives."""
    if isinstance(solution, str):
        return solution
    if isinstance(solution, list | tuple):
        return "/".join(str(s) for s in solution if s is not None)
    return "" if solution is None else str(solution)


def vlmr3_accuracy(content: str, solution, source: str | None = None, question: str = "",
                   judge: Judge | None = None) -> float:
    """VLM-R3's ``accuracy_reward`` for one completion, in [0, 1]."""
    if not isinstance(content, str):
        return 0.0
    sol = solution_text(solution)
    try:
        if source == "MMK12":
            value = math_score(content, sol)
        elif source == "textvqa":
            value = textvqa_score(content, sol, question, judge)
        else:
            value = verifier_score(content, sol, question, judge)
    except Exception:  # noqa: BLE001 - rewards never raise
        return 0.0
    return max(0.0, min(float(value), 1.0))


def judge_requests(content: str, solution, source: str | None = None,
                   question: str = "") -> list[tuple[str, str, str]]:
    """The (question, gold, prediction) triples :func:`vlmr3_accuracy` would put to a judge
    (for one concurrent prefetch per batch)."""
    asked: list[tuple[str, str, str]] = []

    def record(q: str, gold: str, pred: str) -> None:
        asked.append((q, gold, pred))
        return None

    vlmr3_accuracy(content, solution, source, question, record)
    return asked
