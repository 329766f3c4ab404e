"""Sharded, atomic, resumable JSONL writing for the data tools, keyed by what determines it.

Work is cut into shards; each finished shard is written to a temporary file and renamed,
together with a small counts file, so an interrupted run leaves only whole shards and a
rerun skips them. At the end the shards are joined (atomically) into one JSONL.

A shard is reused only by a run that would write the same bytes: the shards live in
``OUT/shards/<name>-<key>/`` where ``<key>`` is a digest of everything the caller says
determines the output (input files' contents, arguments, the codec's weights) plus the shard
size and item count. A rerun with anything changed (another ``--limit``, ``--shard-size``,
codec or input) gets a fresh folder, and the earlier run's shards of that name are removed,
with what differed printed. Callers hold :func:`svp.common.io.output_lock` on the output
folder, so two runs cannot write into it at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from svp.common.io import atomic_path, write_atomic

KEY_FILE = "key.json"


def key_digest(key: dict[str, Any]) -> str:
    """16 hex digits identifying ``key`` (JSON with sorted keys)."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _differences(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _discard_stale(shard_root: Path, name: str, keep: Path, key: dict) -> None:
    """Remove shards of ``name`` written under another key (and those of the unkeyed layout
    of earlier versions, ``shards/<name>-00000.jsonl``), saying what differed."""
    keyed = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{16}}$")
    flat = re.compile(rf"^{re.escape(name)}-\d{{5}}\.(jsonl|counts\.json)$")
    for path in sorted(shard_root.iterdir()):
        if path == keep:
            continue
        if path.is_dir() and keyed.match(path.name):
            try:
                old = json.loads((path / KEY_FILE).read_text())
            except (OSError, ValueError):
                old = {}
            what = "; ".join(_differences(old, key)) or "unknown settings"
            print(f"{name}: discarding the shards of an earlier run with other inputs or "
                  f"settings ({what})", file=sys.stderr)
            shutil.rmtree(path)
        elif path.is_file() and flat.match(path.name):
            path.unlink()


def run_sharded(items: Sequence[Any], shard_size: int, out_dir: Path, name: str,
                process: Callable[[list[Any], int], tuple[list[dict], Counter]],
                desc: str | None = None, key: dict[str, Any] | None = None
                ) -> tuple[Path, Counter]:
    """Process ``items`` shard by shard with ``process(shard, index) -> (rows, counts)``.

    ``key``: everything besides the items' number and the shard size that determines the
    rows (see the module's docstring). Returns the joined JSONL (``out_dir/name.jsonl``) and
    the summed counts, including those of shards finished by an earlier run with this key.
    """
    from tqdm import tqdm

    key = {**(key or {}), "name": name, "shard_size": shard_size, "items": len(items)}
    shard_root = out_dir / "shards"
    shard_dir = shard_root / f"{name}-{key_digest(key)}"
    shard_root.mkdir(parents=True, exist_ok=True)
    _discard_stale(shard_root, name, shard_dir, key)
    shard_dir.mkdir(exist_ok=True)
    write_atomic(shard_dir / KEY_FILE, json.dumps(key, indent=1, sort_keys=True, default=str))
    shards = [list(items[i:i + shard_size]) for i in range(0, len(items), shard_size)]
    totals: Counter = Counter()
    with tqdm(total=len(items), desc=desc or name, unit="item") as bar:
        for k, shard in enumerate(shards):
            path = shard_dir / f"{k:05d}.jsonl"
            meta = shard_dir / f"{k:05d}.counts.json"
            if path.is_file() and meta.is_file():  # finished by an earlier run, same key
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
            f.write((shard_dir / f"{k:05d}.jsonl").read_text(encoding="utf-8"))
    return joined, totals


def write_registry_entry(out_dir: Path, name: str, annotation: Path, data_path: str) -> Path:
    """``out_dir/datasets.yaml`` naming the joined file for plugins/dataset_registry.py;
    entries of other names already there (a train and a val split written into one folder)
    are kept."""
    import yaml

    path = out_dir / "datasets.yaml"
    entries: dict[str, Any] = {}
    if path.is_file():
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("datasets"), dict):
            entries = dict(doc["datasets"])
    entries[name] = {"annotation_path": annotation.name, "data_path": data_path}
    write_atomic(path, yaml.safe_dump({"datasets": entries}, sort_keys=True))
    return path


def summary_line(name: str, totals: Counter, joined: Path) -> str:
    skipped = {k: v for k, v in totals.items() if k.startswith("skipped")}
    extra = f" {skipped}" if skipped else ""
    return (f"{name}: {totals['written']} rows written ({totals.get('no_target', 0)} no-target), "
            f"{sum(skipped.values())} skipped{extra} -> {joined}")
