#!/usr/bin/env python
"""Throughput of the six R-GRPO rewards on a realistic GRPO batch, single core.

    python bench/bench_rewards.py --completions 512 --repeats 5

The batch (``svp.testing.synthetic.rollout_reward_batch``) looks like a real crop-tool
rollout batch: 64 prompts x 8 generations, reasoning of 200-1500 characters with 0-4
executed or rejected crop calls, answers of every kind, ground-truth boxes on half the rows.
Each reward is called the way ms-swift calls it (``reward(completions,
**columns)``), without an LLM judge (its cost is the endpoint's). Prints completions/s per
reward and for all six, and, measured in the same run, ms-swift's stock ``format`` reward
(one regex) as the reference: ratio = all six / stock format in completions/s.

"All six, one batch" is what a GRPO step costs: ms-swift calls the six in turn on the same
batch, and they share the cleaned text, the scheduler's records and the accuracy.
"All six, each alone" adds up each reward timed on its own (no sharing). Every timed call
gets a fresh copy of the batch, so nothing is shared across repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.pop("SVP_JUDGE_URL", None)

def fresh(comps: list[str], cols: dict) -> tuple[list[str], dict]:
    """A copy of the batch with new string and list objects, as the next GRPO step brings
    (the rewards share work within one batch, recognised by identity, never across)."""
    return ([c.encode().decode() for c in comps],
            {k: list(v) if isinstance(v, list) else v for k, v in cols.items()})


def rate(fns, comps, cols, repeats: int) -> float:
    """Completions/s of calling ``fns`` in turn on one batch (median over fresh copies)."""
    copies = [fresh(comps, cols) for _ in range(repeats + 1)]
    times = []
    for k, (c, kw) in enumerate(copies):
        t0 = time.perf_counter()
        for fn in fns:
            out = fn(c, **kw)
            assert len(out) == len(c)
        if k:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    return len(comps) / statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--completions", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # single core
    except (AttributeError, OSError):
        pass
    from swift.rewards import orms
    from swift.utils.utils import import_external_file

    import_external_file(str(REPO / "plugins" / "rgrpo.py"))  # as --external_plugins does
    from svp.croptool.rewards import REWARDS
    from svp.testing.synthetic import rollout_reward_batch

    comps, cols = rollout_reward_batch(args.completions)
    print(f"batch: {len(comps)} completions, mean {statistics.mean(map(len, comps)):.0f} chars, "
          f"{sum(len(i['crop_tool']['calls']) for i in cols['rollout_infos'])} crop calls")
    fns = [orms[name](args=None) for name in REWARDS]
    alone = 0.0
    for name, fn in zip(REWARDS, fns, strict=True):
        r = rate([fn], comps, cols, args.repeats)
        alone += 1 / r
        print(f"{name:22s} {r:10.0f} completions/s")
    together = rate(fns, comps, cols, args.repeats)
    stock = rate([orms["format"](args=None)], comps, cols, args.repeats)
    print(f"{'all six, each alone':22s} {1 / alone:10.0f} completions/s")
    print(f"{'all six, one batch':22s} {together:10.0f} completions/s  (as ms-swift calls "
          "them: six calls on one batch)")
    print(f"{'stock format (ref)':22s} {stock:10.0f} completions/s")
    print(f"ratio all six (one batch) / stock format: {together / stock:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"one_batch": together, "each_alone": 1 / alone,
                                               "stock_format": stock}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
