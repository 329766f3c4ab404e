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

from svp.common.image_check import ImageCheck, check_image, row_kind
from svp.common.io import BadLine, iter_jsonl, read_json_document

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
    "unusable_image",
    "video_tag_mismatch",
    "missing_video",
)


# Notes: rows that are used as they are, but that a user should know about.
NOTES = {
    "exif_orientation": "images carry an EXIF orientation tag: training (like every tool "
                        "here) uses the stored pixels, not the picture a viewer rotates, so "
                        "boxes or masks drawn on the rotated picture would be wrong",
    "outside_data_path": "rows name an absolute image path outside the entry's data_path",
}


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
    """Problems found in one or more annotation files, plus how many rows were looked at, and
    ``notes``: things that are not errors but change what training sees (per kind, the
    count and the first example)."""

    rows_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: dict[str, list] = field(default_factory=dict)

    def note(self, kind: str, example: str) -> None:
        entry = self.notes.setdefault(kind, [0, example])
        entry[0] += 1

    @property
    def bad_rows(self) -> int:
        return len({(p.file, p.where) for p in self.problems})

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def extend(self, other: ValidationReport) -> None:
        self.rows_checked += other.rows_checked
        self.problems.extend(other.problems)
        for kind, (n, example) in other.notes.items():
            entry = self.notes.setdefault(kind, [0, example])
            entry[0] += n

    def format_notes(self) -> str:
        """One line per note kind: what it means, how many, the first example."""
        return "\n".join(f"note: {n} {NOTES[kind]} (first: {example})"
                         for kind, (n, example) in sorted(self.notes.items()))

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
    if re.search(r"#\d+$", m.group("name")):
        raise RegistryError(f"{spec!r}: #N (rows) and %X (percent) cannot be combined; "
                            "use one of them")
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
        for lineno, item in iter_jsonl(path):
            if isinstance(item, BadLine):
                yield f"line {lineno}", _Malformed(str(item))
            else:
                yield from _expand(f"line {lineno}", item)
        return
    try:
        doc = read_json_document(path)
    except ValueError as exc:
        raise RegistryError(f"{path}: {exc}") from exc
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
    """Checks each image the way training will read it (svp/common/image_check.py: full
    decode, the decompression-bomb limit, sample width, the Qwen processors' aspect-ratio
    limits at the run's pixel budget); each path is read once. ``full=False`` reads only the
    header (fast; a truncated file passes). Paths are checked in a thread pool: PIL decodes
    outside the GIL."""

    def __init__(self, workers: int = 8, budgets=(), full: bool = True):
        self.workers = workers
        self.budgets = tuple(budgets)
        self.full = full
        self._cache: dict[Path, ImageCheck] = {}

    def check_many(self, paths: Iterable[Path]) -> None:
        todo = [p for p in dict.fromkeys(paths) if p not in self._cache]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for path, result in zip(todo, pool.map(self._check, todo), strict=True):
                self._cache[path] = result

    def check(self, path: Path) -> ImageCheck:
        if path not in self._cache:
            self._cache[path] = self._check(path)
        return self._cache[path]

    def error(self, path: Path) -> str | None:
        """None when usable; ``"missing"``; or the reason."""
        result = self.check(path)
        return "missing" if result.kind == "missing" else result.error

    def _check(self, path: Path) -> ImageCheck:
        return check_image(path, self.budgets, self.full)


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


def validate_row(
    raw: Any,
    where: str,
    file: str,
    entry_data_path: Path | None,
    annotation_path: Path,
    images: ImageChecker,
    notes: list[tuple[str, str]] | None = None,
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Check one row and convert it to ms-swift form; returns (row or None, problems).
    ``notes`` receives (kind, example) for usable rows worth a word (:data:`NOTES`)."""

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
        for raw_path, p in zip(media, resolved, strict=True):
            if out_key == "images":
                result = images.check(p)
                kind = row_kind(result)
                if kind == "missing_image":
                    problems.append(problem(kind, f"image file not found: {p}"))
                elif kind:
                    problems.append(problem(kind, f"{p}: {result.error}"))
                elif notes is not None:
                    if result.orientation != 1:
                        notes.append(("exif_orientation",
                                      f"{file}: {where}: {p} (orientation {result.orientation})"))
                    if (entry_data_path is not None and Path(raw_path).is_absolute()
                            and not _inside(p, entry_data_path)):
                        notes.append(("outside_data_path",
                                      f"{file}: {where}: {p} (data_path {entry_data_path})"))
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
    images: ImageChecker | None = None,
) -> LoadedDataset:
    """Read, validate and convert every row of one registry dataset.

    Strict (default): any problem raises :class:`DataValidationError` carrying the whole
    report. ``skip_bad_rows``: bad rows are dropped and counted in ``LoadedDataset.skipped``.
    ``images``: how pictures are checked (default: full decode, no pixel budget; callers pass
    the run's: ``svp.dataset_registry.settings.RegistrySettings.image_checker``).
    """
    file = str(entry.annotation_path)
    raw_rows = list(iter_annotation_rows(entry.annotation_path))
    # Check the images in parallel; rows are then validated in order.
    checker = images or ImageChecker()
    checker.check_many(_all_image_paths(raw_rows, entry))
    report = ValidationReport()
    rows: list[dict[str, Any]] = []
    iterator: Iterable[tuple[str, Any]] = raw_rows
    if progress and len(raw_rows) > 5000:
        from tqdm import tqdm

        iterator = tqdm(raw_rows, desc=f"validate {entry.name}", unit="row")
    for where, raw in iterator:
        notes: list[tuple[str, str]] = []
        row, problems = validate_row(raw, where, file, entry.data_path,
                                     entry.annotation_path, checker, notes)
        report.rows_checked += 1
        report.problems.extend(problems)
        for kind, example in notes:
            report.note(kind, example)
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

