"""Dataset registry in the NEO / qwen-vl-finetune style, without any ms-swift import.

A YAML file maps dataset names to ``{annotation_path, data_path}``. Annotations are LLaVA rows
(``image`` + ``conversations`` with ``from``/``value``) or ms-swift rows (``images`` +
``messages`` with ``role``/``content``), stored as a JSON list, JSONL, or "packed" lists (an
element that is itself a list of rows, as qwen-vl-finetune writes them). Everything a user can
get wrong is checked here, before training starts, and every problem names the file, the row
and the reason: that is the whole point of this module. ms-swift glue lives in
``svp/dataset_registry/swift_plugin.py``; ``data_tools/check_data.py`` uses this module directly.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IMAGE_TAG = "<image>"
VIDEO_TAG = "<video>"
ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
}
# Which role may follow which. system only opens a conversation; tool results answer an
# assistant tool call and are followed by the assistant again.
_ALLOWED_NEXT = {
    None: {"system", "user"},
    "system": {"user"},
    "user": {"assistant"},
    "assistant": {"user", "tool"},
    "tool": {"tool", "assistant"},
}
_PERCENT_RE = re.compile(r"^(?P<name>.+?)%(?P<pct>\d+(?:\.\d+)?)$")

# Problem kinds, in the order reports list them.
KINDS = (
    "malformed_row",
    "empty_conversation",
    "unknown_role",
    "turn_order",
    "empty_turn",
    "image_tag_mismatch",
    "missing_image",
    "unreadable_image",
    "video_tag_mismatch",
    "missing_video",
)


class RegistryError(ValueError):
    """The registry file itself is wrong (missing file, unknown name, bad keys)."""


class DataValidationError(ValueError):
    """Raised in strict mode; the message is the full report (first problems + counts)."""

    def __init__(self, report: ValidationReport, max_shown: int = 20, name: str = ""):
        self.report = report
        head = f"dataset {name!r}: " if name else ""
        super().__init__(f"{head}{report.format(max_shown=max_shown)}\n"
                         f"Fix these rows, or set SVP_BAD_ROWS=skip to drop them.")


@dataclass(frozen=True)
class DatasetEntry:
    """One registry entry; paths are absolute (relative ones are taken from the YAML's folder)."""

    name: str
    annotation_path: Path
    data_path: Path | None
    registry_file: Path


@dataclass(frozen=True)
class Problem:
    """One bad row: where it is and why it is bad."""

    file: str
    where: str  # "line 12" (JSONL), "row 3" (JSON list, 1-based), "row 3.2" (packed)
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.kind}: {self.detail}"


@dataclass
class ValidationReport:
    """Problems found in one or more annotation files, plus how many rows were looked at."""

    rows_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def bad_rows(self) -> int:
        return len({(p.file, p.where) for p in self.problems})

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def extend(self, other: ValidationReport) -> None:
        self.rows_checked += other.rows_checked
        self.problems.extend(other.problems)

    def format(self, max_shown: int = 20) -> str:
        """A human report: the first ``max_shown`` problems, then a count per kind."""
        if not self.problems:
            return f"{self.rows_checked} rows checked, no problems."
        lines = [
            f"{self.bad_rows} bad rows out of {self.rows_checked} "
            f"({len(self.problems)} problems):"
        ]
        lines += [f"  {p}" for p in self.problems[:max_shown]]
        if len(self.problems) > max_shown:
            lines.append(f"  ... and {len(self.problems) - max_shown} more")
        counts = self.counts()
        lines.append("Problems per kind: " + ", ".join(
            f"{k}={counts[k]}" for k in KINDS if counts.get(k)))
        return "\n".join(lines)


@dataclass
class LoadedDataset:
    """Rows converted to ms-swift's ``messages``/``images`` form, and what was found on the way."""

    entry: DatasetEntry
    rows: list[dict[str, Any]]
    report: ValidationReport
    skipped: int = 0


# --------------------------------------------------------------------------------------------
# Registry files


def load_registry(paths: Iterable[str | os.PathLike]) -> dict[str, DatasetEntry]:
    """Read registry YAML files; a later file may not redefine a name an earlier one defined.

    Accepted layouts: ``{datasets: {name: {annotation_path, data_path}}}`` or the bare mapping
    ``{name: {...}}`` (what NEO's ``data_dict`` looks like when written as YAML).
    """
    entries: dict[str, DatasetEntry] = {}
    for raw_path in paths:
        path = Path(raw_path).expanduser().resolve()
        if not path.is_file():
            raise RegistryError(f"dataset registry file not found: {path}")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
        if isinstance(doc, dict) and isinstance(doc.get("datasets"), dict):
            doc = doc["datasets"]
        if not isinstance(doc, dict) or not doc:
            raise RegistryError(
                f"{path}: expected a mapping of dataset names to "
                "{annotation_path, data_path} (optionally under a 'datasets:' key)")
        for name, spec in doc.items():
            entries_name = str(name)
            if entries_name in entries:
                raise RegistryError(
                    f"{path}: dataset {entries_name!r} is already defined in "
                    f"{entries[entries_name].registry_file}")
            entries[entries_name] = _parse_entry(path, entries_name, spec)
    return entries


def _parse_entry(path: Path, name: str, spec: Any) -> DatasetEntry:
    if "%" in name or "#" in name or ":" in name:
        raise RegistryError(f"{path}: dataset name {name!r} may not contain '%', '#' or ':'")
    if not isinstance(spec, dict):
        raise RegistryError(f"{path}: dataset {name!r}: expected a mapping, got {spec!r}")
    unknown = set(spec) - {"annotation_path", "data_path"}
    if unknown:
        raise RegistryError(f"{path}: dataset {name!r}: unknown keys {sorted(unknown)}")
    ann = spec.get("annotation_path")
    if not ann:
        raise RegistryError(f"{path}: dataset {name!r}: 'annotation_path' is required")
    data = spec.get("data_path") or None
    base = path.parent
    return DatasetEntry(
        name=name,
        annotation_path=_resolve(base, ann),
        data_path=_resolve(base, data) if data else None,
        registry_file=path,
    )


def _resolve(base: Path, value: str | os.PathLike) -> Path:
    p = Path(os.path.expandvars(str(value))).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def parse_spec(spec: str) -> tuple[str, float | None]:
    """``name%50`` -> ("name", 50.0); ``name`` -> ("name", None). The percentage must be > 0."""
    m = _PERCENT_RE.match(spec.strip())
    if not m:
        return spec.strip(), None
    pct = float(m.group("pct"))
    if pct <= 0:
        raise RegistryError(f"{spec!r}: the sampling percentage must be > 0")
    return m.group("name"), pct


def sampled_count(n_rows: int, percent: float | None) -> int:
    """How many rows ``%percent`` selects: round(n * p / 100), at least 1 of a non-empty set.

    Above 100 the set is repeated whole ``floor(p/100)`` times and the rest is sampled, which
    is what ms-swift's ``dataset_sample`` does with the number returned here.
    """
    if percent is None or n_rows == 0:
        return n_rows
    return max(1, int(math.floor(n_rows * percent / 100.0 + 0.5)))


# --------------------------------------------------------------------------------------------
# Reading annotation files


def iter_annotation_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, raw_row)`` for every row of a JSON list / JSONL file, packed or not.

    A JSONL line or JSON element that does not parse yields ``(where, _Malformed(reason))``
    so the validator can report it with its line number instead of stopping at the first one.
    """
    if not path.is_file():
        raise RegistryError(f"annotation file not found: {path}")
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"line {lineno}", _Malformed(f"invalid JSON: {exc.msg}")
                    continue
                yield from _expand(f"line {lineno}", item)
        return
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RegistryError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise RegistryError(f"{path}: expected a JSON list of rows, got {type(doc).__name__}")
    for i, item in enumerate(doc, start=1):
        yield from _expand(f"row {i}", item)


@dataclass(frozen=True)
class _Malformed:
    reason: str


def _expand(where: str, item: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(item, list):  # a packed group of rows
        if not item:
            yield where, _Malformed("empty packed list")
        for j, sub in enumerate(item, start=1):
            yield f"{where}.{j}", sub
    else:
        yield where, item


# --------------------------------------------------------------------------------------------
# Validation and conversion


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def resolve_media(value: str, data_path: Path | None, annotation_path: Path) -> Path:
    """Relative media paths are taken from ``data_path``, or the annotation file's folder."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    return (data_path or annotation_path.parent) / p


class ImageChecker:
    """Checks that images exist and that PIL can identify them; each path is opened once.

    Only the header is read (``Image.open`` + size), which catches missing, empty, truncated
    headers and non-image files at a cost of about one small read per image. Paths are checked
    in a thread pool because the work is I/O bound.
    """

    def __init__(self, workers: int = 8):
        self.workers = workers
        self._cache: dict[Path, str | None] = {}

    def check_many(self, paths: Iterable[Path]) -> None:
        todo = [p for p in dict.fromkeys(paths) if p not in self._cache]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for path, err in zip(todo, pool.map(_image_error, todo), strict=True):
                self._cache[path] = err

    def error(self, path: Path) -> str | None:
        if path not in self._cache:
            self._cache[path] = _image_error(path)
        return self._cache[path]


def _image_error(path: Path) -> str | None:
    """None when the image can be identified; otherwise ``"missing"`` or the reason."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            w, h = im.size
        if w <= 0 or h <= 0:
            return f"zero-sized image ({w}x{h})"
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"cannot be read as an image ({type(exc).__name__}: {exc})"
    return None


def validate_row(
    raw: Any,
    where: str,
    file: str,
    entry_data_path: Path | None,
    annotation_path: Path,
    images: ImageChecker,
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Check one row and convert it to ms-swift form; returns (row or None, problems)."""

    def problem(kind: str, detail: str) -> Problem:
        return Problem(file=file, where=where, kind=kind, detail=detail)

    if isinstance(raw, _Malformed):
        return None, [problem("malformed_row", raw.reason)]
    if not isinstance(raw, dict):
        return None, [problem("malformed_row", f"expected an object, got {type(raw).__name__}")]

    if "conversations" in raw or "conversation" in raw:
        turns = raw.get("conversations", raw.get("conversation"))
        role_key, content_key = "from", "value"
    else:
        turns = raw.get("messages")
        role_key, content_key = "role", "content"
    if turns is None or turns == []:
        return None, [problem("empty_conversation", "no 'conversations' (or 'messages') turns")]
    if not isinstance(turns, list):
        return None, [problem("malformed_row", f"conversations must be a list, got "
                                               f"{type(turns).__name__}")]

    problems: list[Problem] = []
    messages: list[dict[str, str]] = []
    prev: str | None = None
    for t_idx, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or not isinstance(turn.get(content_key), str):
            problems.append(problem(
                "malformed_row", f"turn {t_idx}: expected {{{role_key!r}: ..., "
                                 f"{content_key!r}: <string>}}, got {_short(turn)}"))
            continue
        raw_role = turn.get(role_key)
        role = ROLE_ALIASES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            problems.append(problem(
                "unknown_role", f"turn {t_idx}: role {raw_role!r} is not one of "
                                f"{sorted(ROLE_ALIASES)}"))
            continue
        if role not in _ALLOWED_NEXT[prev]:
            after = f"after {prev!r}" if prev else "as the first turn"
            problems.append(problem("turn_order", f"turn {t_idx}: {role!r} {after}"))
        content = turn[content_key]
        if role in ("user", "assistant") and not content.strip():
            problems.append(problem("empty_turn", f"turn {t_idx}: empty {role} message"))
        messages.append({"role": role, "content": content})
        prev = role
    if not any(m["role"] != "system" for m in messages) and not problems:
        problems.append(problem("empty_conversation", "only a system message"))
    elif messages and messages[-1]["role"] != "assistant" and not problems:
        problems.append(problem(
            "turn_order", f"last turn is {messages[-1]['role']!r}; it must be 'assistant'"))

    out: dict[str, Any] = {"messages": messages}
    for key, alt, tag, kind_tag, kind_missing, out_key in (
        ("image", "images", IMAGE_TAG, "image_tag_mismatch", "missing_image", "images"),
        ("video", "videos", VIDEO_TAG, "video_tag_mismatch", "missing_video", "videos"),
    ):
        value = raw.get(key, raw.get(alt))
        media = _as_list(value)
        if media is None:
            problems.append(problem("malformed_row", f"{key!r} must be a path or a list of "
                                                     f"paths, got {_short(value)}"))
            continue
        n_tags = sum(m["content"].count(tag) for m in messages)
        if n_tags != len(media):
            problems.append(problem(
                kind_tag, f"{n_tags} {tag} tag(s) but {len(media)} {key}(s)"))
        resolved = [resolve_media(m, entry_data_path, annotation_path) for m in media]
        for p in resolved:
            if out_key == "images":
                err = images.error(p)
                if err == "missing":
                    problems.append(problem("missing_image", f"image file not found: {p}"))
                elif err:
                    problems.append(problem("unreadable_image", f"{p}: {err}"))
            elif not p.is_file():
                problems.append(problem(kind_missing, f"video file not found: {p}"))
        if resolved:
            out[out_key] = [str(p) for p in resolved]
    return (None if problems else out), problems


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_dataset_rows(
    entry: DatasetEntry,
    *,
    skip_bad_rows: bool = False,
    max_shown: int = 20,
    progress: bool = True,
) -> LoadedDataset:
    """Read, validate and convert every row of one registry dataset.

    Strict (default): any problem raises :class:`DataValidationError` carrying the whole
    report. ``skip_bad_rows``: bad rows are dropped and counted in ``LoadedDataset.skipped``.
    """
    file = str(entry.annotation_path)
    raw_rows = list(iter_annotation_rows(entry.annotation_path))
    # Prefetch image headers in parallel; rows are then validated in order.
    checker = ImageChecker()
    checker.check_many(_all_image_paths(raw_rows, entry))
    report = ValidationReport()
    rows: list[dict[str, Any]] = []
    iterator: Iterable[tuple[str, Any]] = raw_rows
    if progress and len(raw_rows) > 5000:
        from tqdm import tqdm

        iterator = tqdm(raw_rows, desc=f"validate {entry.name}", unit="row")
    for where, raw in iterator:
        row, problems = validate_row(raw, where, file, entry.data_path,
                                     entry.annotation_path, checker)
        report.rows_checked += 1
        report.problems.extend(problems)
        if row is not None:
            rows.append(row)
    if report.problems and not skip_bad_rows:
        raise DataValidationError(report, max_shown=max_shown, name=entry.name)
    return LoadedDataset(entry=entry, rows=rows, report=report, skipped=report.bad_rows)


def _all_image_paths(raw_rows: list[tuple[str, Any]], entry: DatasetEntry) -> Iterator[Path]:
    for _, raw in raw_rows:
        if isinstance(raw, dict):
            media = _as_list(raw.get("image", raw.get("images")))
            for m in media or []:
                yield resolve_media(m, entry.data_path, entry.annotation_path)

