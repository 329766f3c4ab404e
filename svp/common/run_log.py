"""Reading ms-swift's ``logging.jsonl``: the one place that knows which rows are steps."""

from __future__ import annotations

import json
from pathlib import Path


def step_rows(logging_jsonl: str | Path) -> list[dict]:
    """The per-step rows of a run's ``logging.jsonl``, each with ``step`` (the global step)
    added; the closing summary row (``train_runtime``) is left out. A missing file gives []."""
    path = Path(logging_jsonl)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "global_step/max_steps" in row and "train_runtime" not in row:
            row["step"] = int(str(row["global_step/max_steps"]).split("/")[0])
            rows.append(row)
    return rows
