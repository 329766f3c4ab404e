"""Sharded, atomic, resumable JSONL writing for the data tools.

Work is cut into shards; each finished shard is written to a temporary file and renamed,
together with a small counts file, so an interrupted run leaves only whole shards and a
rerun skips them. At the end the shards are joined (atomically) into one JSONL.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from svp.common.io import atomic_path, write_atomic


def run_sharded(items: Sequence[Any], shard_size: int, out_dir: Path, name: str,
                process: Callable[[list[Any], int], tuple[list[dict], Counter]],
                desc: str | None = None) -> tuple[Path, Counter]:
    """Process ``items`` shard by shard with ``process(shard, index) -> (rows, counts)``.

    Returns the joined JSONL (``out_dir/name.jsonl``) and the summed counts, including
    those of shards finished by an earlier run.
    """
    from tqdm import tqdm

    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = [list(items[i:i + shard_size]) for i in range(0, len(items), shard_size)]
    totals: Counter = Counter()
    with tqdm(total=len(items), desc=desc or name, unit="item") as bar:
        for k, shard in enumerate(shards):
            path = shard_dir / f"{name}-{k:05d}.jsonl"
            meta = shard_dir / f"{name}-{k:05d}.counts.json"
            if path.is_file() and meta.is_file():  # finished by an earlier run
                totals.update(json.loads(meta.read_text()))
            else:
                rows, counts = process(shard, k)
                write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                           for r in rows))
                write_atomic(meta, json.dumps(dict(counts)))
                totals.update(counts)
            bar.update(len(shard))
    joined = out_dir / f"{name}.jsonl"
    with atomic_path(joined) as tmp, tmp.open("w", encoding="utf-8") as f:
        for k in range(len(shards)):
            f.write((shard_dir / f"{name}-{k:05d}.jsonl").read_text(encoding="utf-8"))
    return joined, totals


def write_registry_entry(out_dir: Path, name: str, annotation: Path, data_path: str) -> Path:
    """``out_dir/datasets.yaml`` naming the joined file for plugins/dataset_registry.py."""
    path = out_dir / "datasets.yaml"
    write_atomic(path, f"datasets:\n  {name}:\n    annotation_path: {annotation.name}\n"
                       f"    data_path: {data_path}\n")
    return path


def summary_line(name: str, totals: Counter, joined: Path) -> str:
    skipped = {k: v for k, v in totals.items() if k.startswith("skipped")}
    extra = f" {skipped}" if skipped else ""
    return (f"{name}: {totals['written']} rows written ({totals.get('no_target', 0)} no-target), "
            f"{sum(skipped.values())} skipped{extra} -> {joined}")
