"""Mask tokens (SAMTok): a region mask as two discrete words, and reading them back.

A mask is ``<|mt_start|><|mt_{c0:04d}|><|mt_{256 + c1:04d}|><|mt_end|>`` with ``c0, c1`` in
0..255: the first code names an entry of the first codebook, the second (offset by 256) an
entry of the residual codebook. 514 tokens in all. The second code may be absent, in which
case the mask is decoded from the first code alone.

Parsing never raises: model output is arbitrary text. The repair rules:
codes are read with a regex; a mask whose first code is not a first-level code (0..255) is
dropped; a second code that is not a second-level code (256..511) is treated as absent; a
mask missing ``<|mt_end|>`` (a truncated generation) ends at the next ``<|mt_start|>`` or
the end of the text; codes outside any ``<|mt_start|>`` pair up on their own.

The logits processor makes malformed masks impossible during generation instead: after
``<|mt_start|>`` only first-level codes, then only second-level codes, then ``<|mt_end|>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CODEBOOK_SIZE = 256
CODEBOOK_DEPTH = 2
MT_START = "<|mt_start|>"
MT_END = "<|mt_end|>"
NO_TARGET = "No target."
_CODE_FMT = "<|mt_{:04d}|>"
_TOKEN_RE = re.compile(r"<\|mt_(start|end|\d{4})\|>")


def code_token(index: int) -> str:
    """The token string of vocabulary code ``index`` (0..511)."""
    return _CODE_FMT.format(index)


def mask_token_list() -> list[str]:
    """All 514 tokens in a fixed order: start, the 512 codes, end."""
    return [MT_START, *(code_token(i) for i in range(CODEBOOK_SIZE * CODEBOOK_DEPTH)), MT_END]


def codes_to_text(c0: int, c1: int | None = None) -> str:
    """``(c0, c1)`` with both in 0..255 -> the four-token string; ``c1`` None/-1 is omitted."""
    if not 0 <= int(c0) < CODEBOOK_SIZE:
        raise ValueError(f"first code {c0} is not in 0..{CODEBOOK_SIZE - 1}")
    parts = [MT_START, code_token(int(c0))]
    if c1 is not None and int(c1) >= 0:
        if not int(c1) < CODEBOOK_SIZE:
            raise ValueError(f"second code {c1} is not in 0..{CODEBOOK_SIZE - 1}")
        parts.append(code_token(CODEBOOK_SIZE + int(c1)))
    parts.append(MT_END)
    return "".join(parts)


def parse_mask_tokens(text: str) -> list[tuple[int, int]]:
    """Every mask in ``text`` as ``(c0, c1)``, ``c1 = -1`` when absent; never raises."""
    if not isinstance(text, str):
        return []
    masks: list[tuple[int, int]] = []
    current: list[int] | None = None  # codes of the mask being read

    def close() -> None:
        nonlocal current
        if current:
            c0 = current[0]
            if 0 <= c0 < CODEBOOK_SIZE:
                c1 = current[1] - CODEBOOK_SIZE if len(current) > 1 else -1
                masks.append((c0, c1 if 0 <= c1 < CODEBOOK_SIZE else -1))
        current = None

    for m in _TOKEN_RE.finditer(text):
        kind = m.group(1)
        if kind == "start":
            close()
            current = []
        elif kind == "end":
            close()
        else:
            code = int(kind)
            if current is None:  # a bare code outside <|mt_start|>: starts a mask of its own
                if code >= CODEBOOK_SIZE:
                    continue  # a stray second-level code cannot start a mask
                current = []
            current.append(code)
            if len(current) == CODEBOOK_DEPTH:  # complete; a following <|mt_end|> is a no-op
                close()
    close()
    return masks


_CODE = re.compile(r"<\|mt_(\d{4})\|>")          # a code token (4 digits: not start/end)
_WHOLE = re.compile(r"<\|mt_start\|><\|mt_(\d{4})\|><\|mt_(\d{4})\|><\|mt_end\|>")
_ANY_CODE = r"<\|mt_\d+\|>"
_SAMTOK_REPAIRS = (  # SAMTok's eval script, in its order: extra codes cut to two, then one
    # code with <|mt_end|> or one code not followed by a code gets the placeholder 9999
    (re.compile(rf"(<\|mt_start\|>{_ANY_CODE}{_ANY_CODE})(?:{_ANY_CODE})+<\|mt_end\|>"),
     r"\1<|mt_end|>"),
    (re.compile(rf"(<\|mt_start\|>{_ANY_CODE})<\|mt_end\|>"), r"\1<|mt_9999|><|mt_end|>"),
    (re.compile(rf"(<\|mt_start\|>{_ANY_CODE})(?!<\|mt_)"), r"\1<|mt_9999|><|mt_end|>"),
)


def parse_mask_tokens_samtok(text: str) -> list[tuple[int, int]]:
    """Masks of ``text`` exactly as SAMTok's GRES evaluation reads them (``--protocol
    samtok``): every code token in order; when their count is odd, the text is repaired
    (a mask with more than two codes keeps its first two, a mask with one code gets the
    out-of-range placeholder 9999) and only complete ``<|mt_start|>a b<|mt_end|>`` masks are
    read; an even count is paired in order whatever the start / end tokens say. A first code
    outside the first codebook drops the mask, a second outside the second becomes -1.
    Never raises."""
    if not isinstance(text, str):
        return []
    ids = [int(x) for x in _CODE.findall(text)]
    if len(ids) % CODEBOOK_DEPTH:
        for pattern, repl in _SAMTOK_REPAIRS:
            text = pattern.sub(repl, text)
        ids = [int(x) for pair in _WHOLE.findall(text) for x in pair]
    masks = []
    for c0, second in zip(ids[0::2], ids[1::2], strict=True):  # an even count here
        c1 = second - CODEBOOK_SIZE
        if 0 <= c0 < CODEBOOK_SIZE:
            masks.append((c0, c1 if 0 <= c1 < CODEBOOK_SIZE else -1))
    return masks


@dataclass(frozen=True)
class MaskAnswerItem:
    """One target of a mask-generation answer."""

    codes: tuple[int, int]
    label: str | None = None


_ITEM_RE = re.compile(
    r'"mask_2d"\s*:\s*"?(?P<mask>(?:<\|mt_[^|]{1,8}\|>)+)"?'
    r'(?:\s*,\s*"label"\s*:\s*"(?P<label>(?:[^"\\]|\\.)*)")?')


ANSWER_STYLES = ("release", "script", "compact")


def format_gres_answer(items: Sequence[MaskAnswerItem], style: str = "release") -> str:
    """The GRES answer: a fenced JSON list of ``{mask_2d, label}``, or ``No target.``.

    ``release``: items joined with ``",\n"`` (the released data's form: valid JSON);
    ``script``: as SAMTok's tokenize_gres.py formats them, the mask string unquoted and the
    label written as is (not JSON); ``compact``: one line (``json.dumps``), our earlier form."""
    if style not in ANSWER_STYLES:
        raise ValueError(f"unknown answer style {style!r}: one of {', '.join(ANSWER_STYLES)}")
    if not items:
        return NO_TARGET
    if style == "script":
        return ("```json\n[" + ",\n".join(
            f'{{"mask_2d": {codes_to_text(*it.codes)}, "label": "{it.label or ""}"}}'
            for it in items) + "]\n```")
    body = [{"mask_2d": codes_to_text(*it.codes), "label": it.label or ""} for it in items]
    if style == "compact":
        return "```json\n" + json.dumps(body, ensure_ascii=False) + "\n```"
    return ("```json\n[" + ",\n".join(json.dumps(b, ensure_ascii=False) for b in body)
            + "]\n```")


def parse_gres_answer(text: str) -> list[MaskAnswerItem]:
    """Masks (and labels where given) of a generated answer; ``[]`` means no target.

    Accepts the quoted form we train on and the unquoted upstream variant
    (``"mask_2d": <|mt_start|>...<|mt_end|>``); falls back to bare mask tokens anywhere in
    the text. Never raises.
    """
    if not isinstance(text, str):
        return []
    items: list[MaskAnswerItem] = []
    for m in _ITEM_RE.finditer(text):
        label = m.group("label")
        if label is not None:
            try:
                label = json.loads(f'"{label}"')
            except json.JSONDecodeError:
                pass
        for codes in parse_mask_tokens(m.group("mask")):
            items.append(MaskAnswerItem(codes, label))
    if items:
        return items
    return [MaskAnswerItem(c) for c in parse_mask_tokens(text)]


def sort_left_to_right(boxes: Iterable[Sequence[float]]) -> list[int]:
    """Order of targets in an answer: by box centre x, then centre y (SAMTok's "ltr-ttb")."""
    centres = [((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, i) for i, b in enumerate(boxes)]
    return [i for _, _, i in sorted(centres)]


# --------------------------------------------------------------------------------------------
# Constrained decoding


@dataclass(frozen=True)
class MaskTokenIds:
    """Token ids of the mask vocabulary in a tokenizer (first/second level as id ranges)."""

    start: int
    end: int
    level0: tuple[int, ...]
    level1: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> MaskTokenIds:
        """Look the 514 tokens up; a clear error when the tokenizer does not have them."""
        ids = tokenizer.convert_tokens_to_ids(mask_token_list())
        unk = getattr(tokenizer, "unk_token_id", None)
        missing = [t for t, i in zip(mask_token_list(), ids, strict=True) if i is None or i == unk]
        if missing:
            raise ValueError(
                f"the tokenizer lacks {len(missing)} of the 514 mask tokens (e.g. {missing[0]}); "
                "add them with data_tools/add_special_tokens.py or load the model with "
                "--external_plugins plugins/masktok.py")
        return cls(start=ids[0], end=ids[-1], level0=tuple(ids[1:1 + CODEBOOK_SIZE]),
                   level1=tuple(ids[1 + CODEBOOK_SIZE:1 + 2 * CODEBOOK_SIZE]))


class MaskTokenLogitsProcessor:
    """Forces every generated mask to be ``start, level-0 code, level-1 code, end``.

    A ``transformers`` logits processor (``generate(..., logits_processor=[p])``) and a plain
    callable ``(input_ids [B, T], scores [B, V]) -> scores``: after ``<|mt_start|>`` only
    first-level codes may follow, after a first-level code only second-level codes, after a
    second-level code only ``<|mt_end|>``; anywhere else codes and ``<|mt_end|>`` are banned,
    so no stray code can appear outside a mask. ``<|mt_start|>`` itself stays free: the model
    decides whether to emit a mask.
    """

    # the state a row is in, by its last token: 0 outside a mask, 1 after <|mt_start|>,
    # 2 after a first-level code, 3 after a second-level code
    def __init__(self, ids: MaskTokenIds):
        self.ids = ids
        self._tables: dict = {}  # (vocab size, device) -> (state of each token, banned)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> MaskTokenLogitsProcessor:
        return cls(MaskTokenIds.from_tokenizer(tokenizer))

    def _tables_for(self, vocab: int, device):
        """Per token id its state, and per state the ids banned next ([4, vocab] bool):
        built once per vocabulary size and device, so a step is a gather and one fill over
        the scores with no host synchronisation."""
        key = (vocab, str(device))
        if key not in self._tables:
            import torch

            ids = self.ids
            state = torch.zeros(vocab, dtype=torch.long)
            state[ids.start] = 1
            state[list(ids.level0)] = 2
            state[list(ids.level1)] = 3
            allowed = torch.zeros(4, vocab, dtype=torch.bool)
            allowed[0] = True
            allowed[0, [*ids.level0, *ids.level1, ids.end]] = False  # codes only in a mask
            allowed[1, list(ids.level0)] = True
            allowed[2, list(ids.level1)] = True
            allowed[3, ids.end] = True
            self._tables[key] = (state.to(device), (~allowed).to(device))
        return self._tables[key]

    def __call__(self, input_ids, scores):
        import torch

        if input_ids.shape[1] == 0:
            return scores
        state, banned = self._tables_for(scores.shape[-1], scores.device)
        last = input_ids[:, -1].clamp(0, scores.shape[-1] - 1)
        return scores.masked_fill(banned[state[last]], torch.finfo(scores.dtype).min)
