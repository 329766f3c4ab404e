"""Run one benchmark through EvalScope against a served model, resume it, read its report.

The command is EvalScope's own (``evalscope eval --eval-type openai_api --api-url ...``) with
the dataset read from a local folder, so it runs on machines without the hub. EvalScope keeps
its predictions per sample under the work folder; a rerun passes ``--use-cache`` on that folder
and only the samples without a prediction are asked again.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from svp.evaluation.benchmarks import Benchmark
from svp.evaluation.settings import evalscope_env, evalscope_executable


@dataclass
class EvalscopeRun:
    benchmark: Benchmark
    base_url: str
    model: str
    data_dir: Path  # the benchmark's local copy (converted for evalscope-custom)
    work_dir: Path
    api_key: str = "EMPTY"
    limit: int | None = None
    batch_size: int = 8
    max_tokens: int = 1024
    subsets: list[str] | None = None  # general_vmcq's subsets (the converter's categories)
    evalscope: str | None = None

    def prediction_files(self) -> list[Path]:
        return sorted((self.work_dir / "predictions").glob("*/*.jsonl"))

    def predicted(self) -> int:
        """Samples that already have a prediction (what a rerun does not ask again)."""
        ids = set()
        for f in self.prediction_files():
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    ids.add((f.name, json.loads(line)["index"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: EvalScope asks that sample again
        return len(ids)

    def command(self) -> list[str]:
        bid = self.benchmark.evalscope_id
        args = {"dataset_id": str(self.data_dir)}
        if self.subsets:
            args["subset_list"] = self.subsets
        cmd = [evalscope_executable(self.evalscope), "eval", "--model", self.model,
               "--api-url", self.base_url, "--api-key", self.api_key,
               "--eval-type", "openai_api", "--datasets", bid,
               "--dataset-args", json.dumps({bid: args}),
               "--eval-batch-size", str(self.batch_size),
               "--generation-config", json.dumps({"max_tokens": self.max_tokens,
                                                  "temperature": 0}),
               "--work-dir", str(self.work_dir), "--no-timestamp"]
        if self.limit is not None:
            cmd += ["--limit", str(self.limit)]
        if self.prediction_files():
            cmd += ["--use-cache", str(self.work_dir)]
        return cmd

    def run(self, log_path: Path | None = None) -> dict:
        """Run EvalScope to the end; returns the report rows and what was resumed."""
        before = self.predicted()
        cmd = self.command()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_path or self.work_dir / "evalscope.log"
        with open(log_path, "ab") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 env=evalscope_env())
        if rc != 0:
            tail = log_path.read_text(errors="replace")[-2500:]
            raise RuntimeError(f"evalscope exited with {rc} (log {log_path}):\n{tail}")
        after = self.predicted()
        return {"rows": read_report(self.work_dir, self.model, self.benchmark),
                "resumed": before, "asked": after - before, "samples": after,
                "command": shlex.join(cmd)}


def read_report(work_dir: Path, model: str, bench: Benchmark) -> list[dict]:
    """EvalScope's report as rows: the overall score, each subset, and each metadata
    ``category`` of the reviews (V* Bench keeps its categories there, not as subsets)."""
    path = work_dir / "reports" / model / f"{bench.evalscope_id}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EvalScope wrote no report")
    report = json.loads(path.read_text(encoding="utf-8"))
    metric = report["metrics"][0]
    name = metric["identity"]["name"]
    rows = [{"category": "overall", "metric": name, "score": 100 * metric["score"],
             "n": metric["num"]}]
    subsets = [s for c in metric.get("categories", []) for s in c.get("subsets", [])
               if not s.get("is_aggregate")]
    if len(subsets) > 1:
        rows += [{"category": s["name"], "metric": name, "score": 100 * s["score"],
                  "n": s["num"]} for s in subsets]
    by_cat: dict[str, list[float]] = defaultdict(list)
    for f in sorted((work_dir / "reviews" / model).glob(f"{bench.evalscope_id}_*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            score = json.loads(line)["sample_score"]
            cat = (score.get("sample_metadata") or {}).get("category")
            value = score["score"]["value"].get(score["score"].get("main_score_name") or name)
            if cat is not None and value is not None:
                by_cat[str(cat)].append(float(value))
    if len(by_cat) > 1:
        rows += [{"category": c, "metric": name, "score": 100 * sum(v) / len(v), "n": len(v)}
                 for c, v in sorted(by_cat.items())]
    return rows
