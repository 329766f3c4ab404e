#!/usr/bin/env python
"""``make bench``: the benchmarks of bench/ in a quick setting, one table of figure, ours,
stock, ratio, goal and whether it is met, printed and written to bench/results.md with the
machine and the date.

    python bench/run_all.py [--out bench/results.md]

Each benchmark runs as its own process (as a user would run it) and hands its figures back
through ``--json``; the stock path is always measured in the same run as ours. Figures the
project has no benchmark for yet are listed with that said, not left out. Benchmarks are
never timed assertions in tests: this is for reading, not for CI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    figure: str
    ours: str
    stock: str
    ratio: float | None
    goal: str
    met: str  # "yes", "**no**", "not measured" or "-" (no goal)

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        return [self.figure, self.ours, self.stock, ratio, self.goal, self.met]


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def run(script: str, *args: str) -> dict:
    """Run bench/<script> with ``args`` and ``--json``; its figures, or the failure."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        print(f"+ python bench/{script} {' '.join(args)}", flush=True)
        proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--json",
                               str(out)], capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"bench/{script} failed (exit {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-2000:]}")
        return json.loads(out.read_text())


def rewards_rows() -> list[Row]:
    f = run("bench_rewards.py", "--completions", "512", "--repeats", "5")
    stock = f"{f['stock_format']:,.0f}/s (ms-swift `format`)"
    return [Row("R-GRPO rewards, all six, one batch (completions/s, 1 core)",
                f"{f['one_batch']:,.0f}/s", stock, None, ">= 20,000/s",
                verdict(f["one_batch"] >= 20000)),
            Row("R-GRPO rewards, all six, each timed alone", f"{f['each_alone']:,.0f}/s",
                stock, None, ">= 20,000/s", verdict(f["each_alone"] >= 20000))]


def crop_rows() -> list[Row]:
    f = run("bench_crop_template.py", "--samples", "30", "--repeats", "5")
    return [Row("crop template encode rate (samples/s, median of 5 alternating rounds)",
                f"{f['crop']:.1f}/s", f"{f['stock']:.1f}/s (pre-cut crops)", f["ratio"],
                ">= 0.95x", verdict(f["ratio"] >= 0.95))]


def import_rows() -> list[Row]:
    rows = run("bench_import.py", "--repeats", "2")
    worst = max((r for r in rows if r["plugin"] != "all"), key=lambda r: r["added_s"])
    both = next(r for r in rows if r["plugin"] == "all")
    stock = f"{both['stock_s']:.2f} s (pipeline import)"
    return [Row(f"plugin import on a swift command, worst entry ({worst['plugin']})",
                f"+{worst['added_s']:.2f} s", stock, None, "<= +1 s",
                verdict(worst["added_s"] <= 1)),
            Row("plugin import, all five entries", f"+{both['added_s']:.2f} s", stock, None,
                "<= +1 s", verdict(both["added_s"] <= 1))]


def decoding_rows() -> list[Row]:
    f = run("bench_constrained_decoding.py", "--batch", "8", "--new-tokens", "64",
            "--repeats", "5")
    big = run("bench_constrained_decoding.py", "--arch", "qwen2_5_vl_3b", "--batch", "8",
              "--new-tokens", "8", "--repeats", "3")
    return [Row("constrained mask decoding, batch 8 (tokens/s; tiny model: an upper bound)",
                f"{f['constrained_tokens_s']:,.0f}/s", f"{f['plain_tokens_s']:,.0f}/s (no "
                "processor)", f["constrained_tokens_s"] / f["plain_tokens_s"],
                "<= 5% overhead", verdict(f["overhead"] <= 0.05)),
            Row("constrained mask decoding, batch 8, Qwen2.5-VL-3B architecture (random "
                "weights, bf16, CPU)", f"{big['constrained_tokens_s']:,.1f}/s",
                f"{big['plain_tokens_s']:,.1f}/s (no processor)",
                big["constrained_tokens_s"] / big["plain_tokens_s"], "<= 5% overhead",
                verdict(big["overhead"] <= 0.05))]


def registry_rows() -> list[Row]:
    f = run("bench_registry.py", "--rows", "4000", "--images", "50", "--repeats", "3")
    ratio = f["registry_rows_s"] / f["stock_rows_s"]
    return [Row("registry load with validation (rows/s)", f"{f['registry_rows_s']:,.0f}/s",
                f"{f['stock_rows_s']:,.0f}/s (stock load_dataset)", ratio,
                "(no goal set)", "-")]


def mask_span_rows() -> list[Row]:
    f = run("bench_mask_span_loss.py", "--steps", "30", "--rounds", "3", "--batch", "4")
    return [Row("mask-token SFT step, `default+mask_span` vs plain loss (s/step, median "
                "ratio of 3 alternating rounds, tiny model, 151k vocab)",
                f"{f['span_s']:.3f} s", f"{f['plain_s']:.3f} s (`--loss_scale default`)",
                f["ratio"], "<= 1.10x", verdict(f["ratio"] <= 1.10))]


def covt_rows() -> list[Row]:
    c = run("bench_covt_cache.py", "--entries", "40")
    compact, full = c["compact"], c["full"]
    f = run("bench_covt.py", "--steps", "20")["s_per_step"]
    return [Row("CoVT target cache, MB per image (sam,depth,dino, real target shapes)",
                f"{compact['bytes_per_image'] / 1e6:.3f} MB (compact)",
                f"{full['bytes_per_image'] / 1e6:.2f} MB (full, the old content)",
                compact["bytes_per_image"] / full["bytes_per_image"], "<= 1 MB",
                verdict(compact["bytes_per_image"] <= 1e6)),
            Row("CoVT cache entries read per second (1 process, warm page cache)",
                f"{compact['reads_per_s']:,.0f}/s", f"{full['reads_per_s']:,.0f}/s (full)",
                None, "(no goal set)", "-"),
            Row("CoVT SFT step, compact cache (s/step, tiny model, stand-in experts)",
                f"{f['covt-cache']:.3f} s", f"{f['stock']:.3f} s (stock qwen2_5_vl, same "
                "tokens)", f["covt-cache"] / f["stock"], "(no goal set)", "-"),
            Row("CoVT SFT step, targets on the fly / full cache",
                f"{f['covt-fly']:.3f} s / {f['covt-full']:.3f} s", f"{f['stock']:.3f} s",
                f["covt-fly"] / f["stock"], "(no goal set)", "-")]


def neo_rows() -> list[Row]:
    f = run("bench_neo.py", "--rounds", "2")
    tokens = f"{f['tokens']} tokens, 6 layers, hidden 512, 151k vocabulary"
    return [Row(f"NEO training step vs same-depth Qwen3 (s, fwd+bwd, {tokens})",
                f"{f['neo_step']:.3f} s", f"{f['qwen_step']:.3f} s (HF Qwen3, full logits)",
                f["step_ratio"], "(no goal set)", "-"),
            Row("NEO training step vs Qwen3 given the same supervised-only loss",
                f"{f['neo_step']:.3f} s", f"{f['qwen_step_sup']:.3f} s", f["step_ratio_sup"],
                "(no goal set)", "-"),
            Row("NEO decoder layer vs Qwen3 layer (MHNA + mixed mask, dense SDPA on CPU)",
                f"{f['neo_layer'] * 1e3:.0f} ms", f"{f['qwen_layer'] * 1e3:.0f} ms",
                f["layer_ratio"], "(no goal set)", "-"),
            Row(f"NEO batched generation, batch {f['gen_batch']} left-padded (new tokens/s)",
                f"{f['batched_tok_s']:.1f}/s", f"{f['single_tok_s']:.1f}/s (batch 1, upstream)",
                f["batched_tok_s"] / f["single_tok_s"], "(no goal set)", "-")]


def serve_rows() -> list[Row]:
    f = run("bench_serve.py", "--requests", "20", "--clients", "1", "8", "32")
    rows = [Row("serving: latency of the crop skill, no call (median of 20; tiny Qwen2.5-VL, "
                "16 new tokens)", f"{f['latency_ours'] * 1e3:.0f} ms",
                f"{f['latency_stock'] * 1e3:.0f} ms (`swift deploy`)", f["latency_ratio"],
                "<= 1.05x", verdict(f["latency_ratio"] <= 1.05))]
    for n in (1, 8, 32):
        ours, stock = f[f"rps_ours_{n}"], f[f"rps_stock_{n}"]
        rows.append(Row(f"serving: requests/s, {n} concurrent client{'s' * (n > 1)}",
                        f"{ours:.2f}/s", f"{stock:.2f}/s (`swift deploy`)", ours / stock,
                        "(no goal set)", "-"))
    return rows


NOT_BUILT = [
    ("SFT tokens/s and MFU, Qwen2.5-VL-3B architecture, bf16 (GPU)", ">= 35% MFU",
     "issue 18 item 7; needs a GPU"),
    ("NEO flex attention vs dense SDPA (bf16 max diff, speed ratio)", "(no goal set)",
     "issue 16; needs a GPU (flex's compiled kernels)"),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


README_MARKS = ("<!-- bench-results -->", "<!-- /bench-results -->")


def results_table(results_md: str) -> str:
    """The dated table of a results.md (its date line, the table and the not-measured list):
    the README shows it as it is, so its figures are never typed by hand."""
    return results_md.split("\n", 2)[2].strip()  # without the title line


def readme_with_results(readme: str, results_md: str) -> str:
    """README.md with the block between README_MARKS replaced by results.md's table."""
    start, end = README_MARKS
    before, sep, rest = readme.partition(start)
    if not sep or end not in rest:
        raise ValueError(f"README.md has no {start} ... {end} block")
    return before + start + "\n" + results_table(results_md) + "\n" + end + rest.split(end, 1)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench" / "results.md"))
    ap.add_argument("--readme", default=str(REPO / "README.md"),
                    help="README whose bench-results block is rewritten ('' to leave it)")
    args = ap.parse_args(argv)
    from svp.common.io import write_atomic

    rows: list[Row] = []
    for part in (rewards_rows, crop_rows, import_rows, decoding_rows, mask_span_rows,
                 covt_rows, registry_rows, neo_rows, serve_rows):
        rows += part()
    rows += [Row(figure, "", "", None, goal, "not measured") for figure, goal, _ in NOT_BUILT]
    header = ["figure", "ours", "stock", "ratio", "goal", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    notes = [f"- {figure}: no benchmark yet ({why})" for figure, _, why in NOT_BUILT]
    text = "\n".join([
        "# Benchmarks (`make bench`, quick settings)", "",
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {machine()}.", "",
        *lines, "", "Not measured:", *notes, ""])
    print("\n" + text)
    write_atomic(args.out, text)
    print(f"written: {args.out}")
    if args.readme:
        readme = Path(args.readme)
        write_atomic(readme, readme_with_results(readme.read_text(), text))
        print(f"updated: {args.readme} (its benchmark table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
