"""``python -m svp.evaluation``: evaluate a served skill model on one benchmark (or several).

    python -m svp.evaluation run --benchmark vstar_bench --data DIR \\
        --base_url http://127.0.0.1:8000/v1 --model crop --out eval_out
    python -m svp.evaluation run --benchmark hr_bench_4k --data hr_bench_4k.tsv ...
    python -m svp.evaluation run --benchmark refseg --splits all --data DATA \\
        --image_root coco/train2014 --base_url http://127.0.0.1:8001/v1 --model masks ...
    python -m svp.evaluation table eval_out        # rewrite results.md
    python -m svp.evaluation list                  # benchmarks, their path and layout

The server is started first (``python -m svp.serve --skill ...``); every result lands in
``OUT/results.json`` and ``OUT/results.md``. A rerun with the same ``--out`` resumes.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from svp.evaluation import benchmarks, table


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m svp.evaluation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="evaluate the served model on benchmarks")
    run.add_argument("--benchmark", required=True,
                     help=f"comma-separated: {', '.join(benchmarks.BENCHMARKS)}")
    run.add_argument("--data", required=True, type=Path,
                     help="the benchmark's local copy (see `list` for each layout)")
    run.add_argument("--base_url", required=True, help="the server, e.g. http://HOST:PORT/v1")
    run.add_argument("--model", required=True, help="the served model name")
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--api_key", default="EMPTY")
    run.add_argument("--limit", type=int, default=None, help="first N samples (per subset)")
    run.add_argument("--max_tokens", type=int, default=1024)
    run.add_argument("--batch_size", type=int, default=8, help="concurrent requests")
    run.add_argument("--evalscope", default=None, help="evalscope executable")
    run.add_argument("--splits", default="all", help="refseg: all, a set, or set:split")
    run.add_argument("--image_root", type=Path, help="refseg: the COCO train2014 pictures")
    run.add_argument("--protocol", default="samtok", help="refseg: samtok or tokens")
    tab = sub.add_parser("table", help="rewrite OUT/results.md from OUT/results.json")
    tab.add_argument("out", type=Path)
    sub.add_parser("list", help="the benchmarks, the path each takes, their local layout")
    return ap


def _run_refseg(args, command: str) -> None:
    from svp.evaluation.refer import parse_splits
    from svp.evaluation.refseg import RefsegConfig, run_split

    if args.image_root is None:
        sys.exit("refseg needs --image_root (the COCO train2014 pictures)")
    cfg = RefsegConfig(base_url=args.base_url, model=args.model, data_root=args.data,
                       image_root=args.image_root, out_dir=args.out / "refseg",
                       api_key=args.api_key, protocol=args.protocol,
                       concurrency=args.batch_size, max_tokens=args.max_tokens,
                       limit=args.limit)
    rows, resumed, asked, failed = [], 0, 0, 0
    per_set: dict[str, list[dict]] = {}
    for dataset, split in parse_splits(args.splits):
        m = run_split(cfg, dataset, split)
        resumed, asked, failed = resumed + m["resumed"], asked + m["asked"], failed + m["failed"]
        per_set.setdefault(dataset, []).append(m)
        metrics = ["cIoU", "gIoU", "Pr@0.5"] + (["N-acc", "T-acc"] if dataset == "grefcoco"
                                                else [])
        rows += [{"category": f"{dataset} {split}", "metric": k, "score": m[k],
                  "n": m["samples"]} for k in metrics]
        if m["skipped"]:
            print(f"[refseg] {dataset} {split}: skipped sentences: {m['skipped']}")
    gref = per_set.get("grefcoco", [])
    if len(gref) == 3:  # the papers' gRefCOCO figure: the mean of its three splits
        for k in ("gIoU", "cIoU", "N-acc"):
            vals = [m[k] for m in gref]
            rows.append({"category": benchmarks.GREF_MEAN, "metric": k,
                         "score": None if None in vals else sum(vals) / 3,
                         "n": sum(m["samples"] for m in gref)})
    md = table.record(args.out, "refseg", {"path": "ours", "command": command, "rows": rows,
                                           "resumed": resumed, "asked": asked,
                                           "failed": failed}, args.model, args.base_url)
    print(f"[refseg] {resumed} sentences from an earlier run, {asked} asked now"
          + (f", {failed} failed (rerun to ask them again)" if failed else "") + f"; {md}")
    if failed:
        sys.exit(1)


def _run_evalscope(bench: benchmarks.Benchmark, args, command: str) -> None:
    from svp.evaluation.evalscope_run import EvalscopeRun

    data, subsets = args.data, None
    if bench.converter is not None:
        from svp.evaluation.convert import CONVERTERS

        data = args.out / "converted" / bench.name
        subsets = CONVERTERS[bench.converter](args.data, data)
        print(f"[{bench.name}] {args.data} -> {data} (general_vmcq subsets: "
              f"{', '.join(subsets)})")
    run = EvalscopeRun(bench, args.base_url, args.model, data, args.out / "evalscope" /
                       bench.name, api_key=args.api_key, limit=args.limit,
                       batch_size=args.batch_size, max_tokens=args.max_tokens,
                       subsets=subsets, evalscope=args.evalscope)
    res = run.run()
    md = table.record(args.out, bench.name, {
        "path": bench.path, "command": command, "evalscope_command": res["command"],
        "rows": res["rows"], "resumed": res["resumed"], "asked": res["asked"]},
        args.model, args.base_url)
    overall = res["rows"][0]
    print(f"[{bench.name}] {overall['metric']} {overall['score']:.1f} on {overall['n']} "
          f"samples ({res['resumed']} from an earlier run, {res['asked']} asked now); {md}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.cmd == "list":
        for b in benchmarks.BENCHMARKS.values():
            print(f"{b.name:<14} {b.path:<17} {b.title}\n{'':<15}layout: {b.layout}\n"
                  f"{'':<15}why: {b.why}")
        return 0
    if args.cmd == "table":
        print(table.write_table(args.out))
        return 0
    names = [n.strip() for n in args.benchmark.split(",") if n.strip()]
    chosen = [benchmarks.get(n) for n in names]
    for bench in chosen:
        one = [a if a != args.benchmark else bench.name for a in argv]
        command = shlex.join(["python", "-m", "svp.evaluation", *one])
        if bench.path == "ours":
            _run_refseg(args, command)
        else:
            _run_evalscope(bench, args, command)
    return 0
