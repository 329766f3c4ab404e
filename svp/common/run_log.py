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


def seconds_per_step(logging_jsonl: str | Path) -> float:
    """Mean time of the steps after the first (which carries compilation and warm-up) from
    ms-swift's running average ``train_speed(s/it)`` at the first and the last logged step
    (needs ``--logging_steps 1``; ``elapsed_time`` is rounded to whole seconds, this is not)."""
    rows = [r for r in step_rows(logging_jsonl) if "train_speed(s/it)" in r]
    if len(rows) < 3:
        raise ValueError(f"{logging_jsonl}: {len(rows)} logged steps, need >= 3 "
                         "(--logging_steps 1 and more --max_steps)")
    first, last = rows[0], rows[-1]
    total = last["train_speed(s/it)"] * last["step"] - first["train_speed(s/it)"] * first["step"]
    return total / (last["step"] - first["step"])
