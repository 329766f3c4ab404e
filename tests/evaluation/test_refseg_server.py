"""Referring segmentation end to end: ``python -m svp.evaluation run --benchmark refseg``
against ``python -m svp.serve --skill masks`` on the tiny model, over every standard split
of RefCOCO/+/g (refs pickles) and gRefCOCO; killed halfway, resumed; rescored by
``eval_gres.py`` from the same answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from svp.evaluation.refer import ALL_SPLITS
from tests.evaluation.conftest import evaluate, evaluate_cmd, jsonl_ids, kill_when
from tests.evaluation.fixtures import refer_sets
from tests.helpers import REPO, offline_env
from tests.serve.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model, trained_codec):
    log = tmp_path_factory.mktemp("mask_server") / "server.log"
    server = start_server(["--skill", "masks", "--model", str(tiny_model("qwen2_5_vl")),
                           "--model_type", "qwen2_5_vl", "--template", "qwen2_5_vl",
                           "--codec", f"builtin:{trained_codec[0]}"], log)
    yield server
    stop_server(server)


def test_every_split_killed_halfway_resumes_and_equals_eval_gres(served, trained_codec,
                                                                   tmp_path):
    data = refer_sets(tmp_path / "data", tmp_path / "train2014", scenes=trained_codec[1])
    out = tmp_path / "eval"
    extra = ("--splits", "all", "--image_root", str(tmp_path / "train2014"),
             "--max_tokens", "24", "--batch_size", "2")
    total = 4 * len(ALL_SPLITS)  # 2 refs x 2 sentences per split
    pred = out / "refseg"

    def halfway():
        n = len(set(jsonl_ids(pred.glob("*.jsonl"), "id")))
        return n if 10 <= n < total else 0

    seen = kill_when(evaluate_cmd(served, "refseg", data, out, *extra), halfway)
    # a kill mid-write leaves half a line: it is dropped and that sample asked again
    last = sorted(pred.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)[-1]
    with open(last, "a") as f:
        f.write('{"id": "half-writ')
    log = evaluate(served, "refseg", data, out, *extra)
    assert "half-written line(s) from a kill dropped" in log
    entry = json.loads((out / "results.json").read_text())["benchmarks"]["refseg"]
    assert entry["resumed"] >= seen and entry["resumed"] + entry["asked"] == total, log
    ids = jsonl_ids(pred.glob("*.jsonl"), "id")
    assert len(ids) == len(set(ids)) == total
    cats = {r["category"] for r in entry["rows"]}
    assert cats == {s.replace(":", " ") for s in ALL_SPLITS} | {
        "grefcoco mean of val/testA/testB"}
    assert "76.7 Qwen2.5VL-SAMTok-3B" in (out / "results.md").read_text()

    # eval_gres.py rescoring the same answers of a gRefCOCO split gives the same figures
    rows = {r["category"] + " " + r["metric"]: r["score"] for r in entry["rows"]}
    res = tmp_path / "eval_gres.json"
    subprocess.run([sys.executable, "data_tools/eval_gres.py", "--pred",
                    str(pred / "grefcoco_testA.jsonl"),
                    "--grefs", str(data / "grefcoco" / "grefs(unc).json"),
                    "--instances", str(data / "grefcoco" / "instances.json"),
                    "--split", "testA", "--image-root", str(tmp_path / "train2014"),
                    "--codec", f"builtin:{trained_codec[0]}", "--out", str(res)],
                   cwd=REPO, env=offline_env(), check=True, capture_output=True)
    theirs = json.loads(res.read_text())["metrics"]
    for key in ("gIoU", "cIoU", "N-acc", "T-acc"):
        assert rows[f"grefcoco testA {key}"] == pytest.approx(theirs[key], abs=1e-9), key
