"""Per-sample predictions kept as JSONL, one row per sample id, so a killed run resumes.

Each row is appended, flushed and fsync'ed as soon as its sample is done; a rerun reads the
file, keeps every complete row and asks only for the rest. A kill can cut the last line short:
such a line is dropped, counted and reported (its sample is asked again), never read as data.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class PredictionStore:
    """The rows of one prediction file, by id; :meth:`add` appends durably (thread-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self.cut_lines = 0  # lines a kill left half-written (their samples are redone)
        self._lock = threading.Lock()
        if self.path.is_file():
            self._read()
        self.loaded = len(self.rows)

    def _read(self) -> None:
        data = self.path.read_bytes()
        for line in data.splitlines(keepends=True):
            try:
                row = json.loads(line)
                if not line.endswith(b"\n") or not isinstance(row, dict) or "id" not in row:
                    raise ValueError("incomplete row")
            except ValueError:
                self.cut_lines += 1
                continue
            self.rows[row["id"]] = row
        if self.cut_lines:
            # keep the good rows only, so later appends start on a fresh line
            from svp.common.io import write_atomic

            write_atomic(self.path, b"".join(
                (json.dumps(r) + "\n").encode() for r in self.rows.values()))

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.rows

    def add(self, row: dict) -> None:
        line = (json.dumps(row) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.rows[row["id"]] = row
