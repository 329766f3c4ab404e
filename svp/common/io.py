"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never a
half-written one. The one copy of temp-file-then-rename in the project."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, same suffix, so writers that go by
    the extension, like ``PIL.Image.save``, still work); on success it replaces ``path``, on
    an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path`` (readable by others, as a model folder
    must be); on success it replaces ``path`` (an old folder there is removed first), on an
    exception it is removed and ``path`` is left as it was. For model folders that a later
    run trusts once they exist."""
    import shutil
    import tempfile

    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (a 500 MB COCO file takes a second or
    two). Used to key outputs by what they were made from, not by file names."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class OutputLocked(RuntimeError):
    """Another live process is writing the same output folder."""


@contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``folder/.svp.lock``, an OS advisory lock) while
    writing into it; a second writer gets :class:`OutputLocked` at once, naming the holder,
    instead of interleaving its shards with the first's. The OS drops the lock when the
    holder exits, killed or not, so a crash never leaves a folder locked."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".svp.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLocked(f"{folder} is being written by another run ({holder}); wait "
                               "for it to finish or write elsewhere") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


class BadLine(str):
    """A JSONL line that could not be used, in place of its value: the reason."""


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """``(line number, value)`` for every non-blank line of a JSONL file, decoded line by line
    so that one line that is not UTF-8 or not JSON is one :class:`BadLine` (with the byte or
    column) instead of the end of the whole file. The one JSONL reader of the data tools."""
    import json

    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield lineno, BadLine(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                      f"{exc.start + 1})")
            except json.JSONDecodeError as exc:
                yield lineno, BadLine(f"invalid JSON at column {exc.colno}: {exc.msg}")


def read_json_document(path: str | os.PathLike):
    """A whole JSON file; ValueError naming the line when it is not UTF-8 or not JSON (a
    document cannot be skipped in part)."""
    import json

    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"line {line}: not UTF-8 (byte 0x{data[exc.start]:02x})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}") from exc
