"""The crop tool's text conventions, one copy each: what generation stops at, what the
scheduler injects after a call, and how the think/answer parts are found.

Used by the templates, the R-GRPO scheduler and rewards, and the inference loop, so a change
here changes all of them together.
"""

from __future__ import annotations

import re

CALL_OPEN = "<tool_call>"
STOP = "</tool_call>"
"""Generation pauses at every closed call so the tool can run (a stop word of the crop
templates)."""
VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
"""What follows an executed call in a rollout: one image pad that the Qwen template expands
to the crop's grid."""
FEEDBACK = "\n(crop failed: {reason})\n"
"""What follows a rejected call in a rollout, so the model is told and can try again."""

_VISION_START, _FEEDBACK_HEAD = "<|vision_start|>", "(crop failed: "
_VISION_RE = re.compile(re.escape(_VISION_START) + ".*?" + re.escape("<|vision_end|>"), re.S)
_FEEDBACK_RE = re.compile(r"\n?" + re.escape(_FEEDBACK_HEAD) + r"[^\n]*\)\n?")
OPEN_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"(?:(?!" + re.escape(STOP) + r").)*$", re.S)
_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_ANSWER_RE = re.compile(r"<answer>(.*?)(</answer>|$)", re.S)  # extract_answer's definition


def clean_text(text) -> str:
    """A completion without the vision blocks and crop-failure notes the scheduler injected
    (what the model itself wrote)."""
    if not isinstance(text, str):
        return ""
    if _VISION_START in text:  # substring tests first: most text has neither
        text = _VISION_RE.sub("", text)
    if _FEEDBACK_HEAD in text:
        text = _FEEDBACK_RE.sub("", text)
    return text


def ends_with_open_call(text: str) -> bool:
    """True when ``text`` ends inside a ``<tool_call>`` that was not closed (an engine that
    strips the stop string leaves the call this way)."""
    return bool(OPEN_CALL_RE.search(text))


def extract_answer(text, closed: bool = True) -> str | None:
    """Content of the last ``<answer>`` (stripped). ``closed``: only answers that end with
    ``</answer>`` count (what the rewards score); otherwise an unclosed last answer is taken
    too (what inference reports when the token budget ran out)."""
    if not isinstance(text, str):
        return None
    # what _ANSWER_RE.finditer finds, by substring search (the reward hot path)
    last = None
    at = text.find("<answer>")
    while at >= 0:
        start = at + len("<answer>")
        end = text.find("</answer>", start)
        if end < 0:
            if not closed:
                last = text[start:]
            break
        last = text[start:end]
        at = text.find("<answer>", end + len("</answer>"))
    return last.strip() if last is not None else None


def extract_think(text: str) -> str | None:
    """Content of the first ``<think>`` (an unclosed one runs to the end)."""
    m = _THINK_RE.search(text) if isinstance(text, str) else None
    return m.group(1).strip() if m else None
