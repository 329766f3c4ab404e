"""One results table for a served model: every benchmark run into the same folder, with the
published number of each method's released checkpoint beside ours.

``OUT/results.json`` holds each benchmark's rows, command and resume counts (rewritten
atomically after every benchmark); ``OUT/results.md`` is made from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from svp.common.io import write_atomic
from svp.evaluation.benchmarks import BENCHMARKS

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def load(out: Path) -> dict:
    path = out / RESULTS_JSON
    if not path.is_file():
        return {"benchmarks": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def record(out: Path, name: str, entry: dict, model: str, base_url: str) -> Path:
    """Add or replace one benchmark's entry and rewrite both files; returns the table."""
    data = load(out)
    data.update(model=model, base_url=base_url)
    data["benchmarks"][name] = {**entry, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_atomic(out / RESULTS_JSON, json.dumps(data, indent=1))
    return write_table(out, data)


def _published(name: str, category: str, metric: str | None) -> list[str]:
    bench = BENCHMARKS.get(name)
    if bench is None:
        return []
    return [f"{p.score:.1f} {p.method} ({p.source})" for p in bench.published
            if p.category == category and p.metric in (None, metric)]


def _fmt(score) -> str:
    return "n/a" if score is None else f"{score:.1f}"


def markdown(data: dict) -> str:
    """The table: benchmark, category, metric, ours, samples, published, path."""
    lines = [f"# Results: `{data.get('model', '?')}` at {data.get('base_url', '?')}", "",
             "Ours: this run, through the served model. Published: the released checkpoint "
             "of the method, as its source reports it (its own harness, prompts and judge).",
             "", "| benchmark | category | metric | ours | samples | published | path |",
             "|---|---|---|---|---|---|---|"]
    commands = []
    for name, entry in data["benchmarks"].items():
        bench = BENCHMARKS.get(name)
        title = bench.title if bench else name
        path = entry.get("path", bench.path if bench else "?")
        for row in entry["rows"]:
            pub = "; ".join(_published(name, row["category"], row.get("metric"))) or "–"
            lines.append(f"| {title} | {row['category']} | {row.get('metric', '')} | "
                         f"{_fmt(row['score'])} | {row['n']} | {pub} | {path} |")
        commands.append(f"- {title}: {entry.get('resumed', 0)} samples from an earlier run, "
                        f"{entry.get('asked', 0)} asked now\n\n  ```\n  {entry['command']}\n"
                        "  ```")
    return "\n".join(lines + ["", "## Commands", "", *commands, ""])


def write_table(out: Path, data: dict | None = None) -> Path:
    return write_atomic(out / RESULTS_MD, markdown(data or load(out)))
