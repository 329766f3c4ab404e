#!/usr/bin/env python
"""Throughput of the six R-GRPO rewards on a realistic GRPO batch, single core.

    python bench/bench_rewards.py --completions 512 --repeats 5

The batch looks like a real crop-tool rollout batch: 64 prompts x 8 generations, reasoning
of 200-1500 characters with 0-4 executed or rejected crop calls (vision blocks and failure
notes in the text, the scheduler's ``rollout_infos``), answers that are option letters,
counts, decimals or free text (a fifth of them wrong, some malformed), ground-truth boxes on
half the rows. Each reward is called the way ms-swift calls it (``reward(completions,
**columns)``), without an LLM judge (its cost is the endpoint's). Prints completions/s per
reward and for all six, and, measured in the same run, ms-swift's stock ``format`` reward
(one regex) as the reference: ratio = all six / stock format in completions/s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.pop("SVP_JUDGE_URL", None)

WORDS = ("the sign above the door shows a small red symbol next to the window while the "
         "person on the left holds a blue umbrella near the counter").split()


def make_batch(n: int, seed: int = 0) -> tuple[list[str], dict]:
    from svp.croptool.format import FEEDBACK, VISION_BLOCK
    from svp.croptool.geometry import CropPolicy

    rng = random.Random(seed)
    policy = CropPolicy("qwen2_5_vl")
    comps, infos, sols, gts, msgs = [], [], [], [], []
    for i in range(n):
        w, h = rng.randint(500, 2000), rng.randint(400, 1500)
        mw, mh = policy.main_size(w, h)
        kind = rng.choice(["letter", "count", "decimal", "text"])
        gold = {"letter": rng.choice("ABCD"), "count": str(rng.randint(0, 40)),
                "decimal": f"{rng.uniform(0, 100):.2f}",
                "text": " ".join(rng.sample(WORDS, 2))}[kind]
        answer = gold if rng.random() < 0.8 else "something else"
        parts, calls, executed = ["<think>"], [], 0
        for _ in range(rng.randint(0, 4)):
            parts.append(" ".join(rng.choices(WORDS, k=rng.randint(8, 60))) + " ")
            x1, y1 = rng.uniform(0, mw * 0.7), rng.uniform(0, mh * 0.7)
            box = [round(x1), round(y1), round(x1 + rng.uniform(5, mw * 0.4)),
                   round(y1 + rng.uniform(5, mh * 0.4))]
            ok = rng.random() < 0.85
            if not ok:
                box = [box[2], box[1], box[0], box[3]]
            parts.append("<tool_call>[" + ", ".join(map(str, box)) + "]</tool_call>")
            parts.append(VISION_BLOCK if ok else FEEDBACK.format(reason="swapped corners"))
            calls.append({"box": [float(v) for v in box], "error": None if ok else "swapped"})
            executed += ok
        parts.append(" ".join(rng.choices(WORDS, k=rng.randint(8, 60))))
        tail = f"</think>\n<answer>{answer}</answer>" if rng.random() < 0.95 else "</think>"
        comps.append("".join(parts) + tail)
        infos.append({"crop_tool": {"calls": calls, "executed": executed, "image_wh": [w, h],
                                    "model_wh": [mw, mh], "space": "resized", "factor": 28},
                      "num_turns": len(calls) + 1})
        sols.append(gold)
        gts.append([[w * 0.1, h * 0.1, w * 0.5, h * 0.6]] if i % 2 else None)
        msgs.append([{"role": "user", "content": "<image>What does the sign show?"}])
    return comps, dict(rollout_infos=infos, solution=sols, gt_boxes=gts, messages=msgs,
                       trainer_state=None)


def rate(fn, comps, cols, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(comps, **cols)
        times.append(time.perf_counter() - t0)
        assert len(out) == len(comps)
    return len(comps) / statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--completions", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # single core
    except (AttributeError, OSError):
        pass
    from swift.rewards import orms

    import plugins.rgrpo  # noqa: F401
    from svp.croptool.rewards import REWARDS

    comps, cols = make_batch(args.completions)
    print(f"batch: {len(comps)} completions, mean {statistics.mean(map(len, comps)):.0f} chars, "
          f"{sum(len(i['crop_tool']['calls']) for i in cols['rollout_infos'])} crop calls")
    total = 0.0
    for name in REWARDS:
        r = rate(orms[name](args=None), comps, cols, args.repeats)
        total += 1 / r
        print(f"{name:22s} {r:10.0f} completions/s")
    ours = 1 / total
    stock = rate(orms["format"](args=None), comps, cols, args.repeats)
    print(f"{'all six':22s} {ours:10.0f} completions/s")
    print(f"{'stock format (ref)':22s} {stock:10.0f} completions/s")
    print(f"ratio all six / stock format: {ours / stock:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
