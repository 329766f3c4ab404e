#!/usr/bin/env python
"""What each ``--external_plugins`` file adds to the start-up of a ``swift`` command.

    python bench/bench_import.py [--repeats 5]

ms-swift imports the plugin files while parsing its arguments, after its own pipeline
(``sft_main`` / ``rlhf_main``) is loaded. So each measurement is a fresh interpreter that
imports that pipeline as ``swift sft`` / ``swift rlhf`` does, then, timed apart, imports the
plugin files the way ``--external_plugins`` does (``import_external_file``). The stock
figure is the pipeline import itself; runs alternate and the medians are reported. Goal
(issue 18): at most +1 s per plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ["dataset_registry", "masktok", "croptool", "rgrpo", "covt"]
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import swift.pipelines
getattr(swift.pipelines, sys.argv[1])  # what `swift sft|rlhf` imports before its arguments
t1 = time.perf_counter()
from swift.utils.utils import import_external_file
for path in sys.argv[2:]:
    import_external_file(path)
t2 = time.perf_counter()
print(json.dumps({"pipeline_s": t1 - t0, "plugins_s": t2 - t1}))
"""


def probe(main: str, plugins: list[str]) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    args = [main, *(str(REPO / "plugins" / f"{p}.py") for p in plugins)]
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(repeats: int) -> list[dict]:
    """One row per plugin (and all five together): median added seconds and the stock
    pipeline import it is added to."""
    rows = []
    for name in [*PLUGINS, "all"]:
        chosen = PLUGINS if name == "all" else [name]
        main = "rlhf_main" if name == "rgrpo" else "sft_main"
        stock, added = [], []
        for _ in range(repeats):
            stock.append(probe(main, [])["pipeline_s"])
            added.append(probe(main, chosen)["plugins_s"])
        rows.append({"plugin": name, "stock_s": statistics.median(stock),
                     "added_s": statistics.median(added)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    rows = measure(args.repeats)
    print(f"{'plugin':18s} {'stock pipeline import':>24s} {'plugin adds':>12s}")
    for r in rows:
        print(f"{r['plugin']:18s} {r['stock_s']:22.2f} s {r['added_s']:10.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
