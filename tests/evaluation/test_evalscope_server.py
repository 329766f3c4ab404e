"""Benchmarks through EvalScope itself (a client we did not write) against the crop-skill
server on the tiny model: its own adapters on fixtures in the benchmarks' columns, ours
converted to its custom format, one table with the published numbers, and a resume."""

from __future__ import annotations

import json

import pytest

from tests.evaluation import fixtures
from tests.evaluation.conftest import evaluate, evaluate_cmd, jsonl_ids, kill_when
from tests.serve.conftest import start_server, stop_server

# benchmark -> (fixture builder, where the data goes, samples, categories the table shows)
CASES = {
    "vstar_bench": (fixtures.vstar, "vstar", 4, {"direct_attributes", "relative_position"}),
    "math_vista": (fixtures.math_vista, "mathvista", 4, set()),
    "science_qa": (fixtures.science_qa, "scienceqa", 4, {"Colours", "Shapes"}),
    "hr_bench_4k": (fixtures.hr_bench, "hr/hr_bench_4k.tsv", 4, {"single", "cross"}),
    "cv_bench": (fixtures.cv_bench, "cvb", 4, {"count", "relation"}),
    "mmvp": (fixtures.mmvp, "mmvp", 4, set()),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    log = tmp_path_factory.mktemp("crop_server") / "server.log"
    server = start_server(["--skill", "crop", "--model", str(tiny_model("qwen2_5_vl")),
                           "--model_type", "qwen2_5_vl"], log)
    yield server
    stop_server(server)


def _openai_messages(stored: list[dict]) -> list[dict]:
    """EvalScope's stored request messages as the OpenAI chat request it sent (the stored
    conversation ends with the answer)."""
    out = []
    for m in stored:
        if m.get("role") == "assistant":
            break
        parts = [{"type": "text", "text": c["text"]} if c["type"] == "text" else
                 {"type": "image_url", "image_url": {"url": c["image"]}}
                 for c in m["content"]]
        out.append({"role": m.get("role", "user"), "content": parts})
    return out


def test_benchmarks_through_evalscope_into_one_table(served, tmp_path):
    out = tmp_path / "eval"
    for bench, (build, where, n, _) in CASES.items():
        build(tmp_path / where, n=n)
        evaluate(served, bench, tmp_path / where, out, "--max_tokens", "8")
    results = json.loads((out / "results.json").read_text())["benchmarks"]
    assert list(results) == list(CASES)
    for bench, (_, _, n, cats) in CASES.items():
        rows = results[bench]["rows"]
        assert rows[0]["category"] == "overall" and rows[0]["n"] == n, bench
        assert {r["category"] for r in rows[1:]} == cats, bench
        assert sum(r["n"] for r in rows[1:]) == (n if cats else 0), bench
    table = (out / "results.md").read_text()
    for text in ("| V* Bench | overall | accuracy |", "84.3 VLM-R3-7B", "72.9 CoVT-7B",
                 "| HR-Bench 4K | single |", "evalscope-custom", "--benchmark mmvp"):
        assert text in table, text

    # EvalScope asked this server: each stored answer is the server's answer to its request
    pred = out / "evalscope" / "vstar_bench" / "predictions" / served.model
    client = served.client()
    rows = [json.loads(x) for f in sorted(pred.glob("*.jsonl"))
            for x in f.read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        again = client.chat.completions.create(
            model=served.model, messages=_openai_messages(row["messages"]), max_tokens=8,
            temperature=0)
        assert again.choices[0].message.content == \
            row["model_output"]["choices"][0]["message"]["content"]


def test_killed_halfway_it_resumes_where_it_stopped(served, tmp_path):
    data = fixtures.vstar(tmp_path / "vstar", n=8)
    out = tmp_path / "eval"
    cmd = evaluate_cmd(served, "vstar_bench", data, out, "--max_tokens", "48",
                       "--batch_size", "1")
    pred = out / "evalscope" / "vstar_bench" / "predictions"

    def halfway():
        n = len(set(jsonl_ids(pred.glob("*/*.jsonl"), "index")))
        return n if 3 <= n < 8 else 0

    before = kill_when(cmd, halfway)
    assert not (out / "results.json").exists()
    log = evaluate(served, "vstar_bench", data, out, "--max_tokens", "48",
                   "--batch_size", "1")
    entry = json.loads((out / "results.json").read_text())["benchmarks"]["vstar_bench"]
    # a kill may land between a prediction's line and the next: at least what was seen
    assert entry["resumed"] >= before and entry["resumed"] + entry["asked"] == 8, log
    assert "--use-cache" in entry["evalscope_command"]
    ids = jsonl_ids(pred.glob("*/*.jsonl"), "index")
    assert sorted(set(ids)) == list(range(8)) and len(ids) == 8
    assert entry["rows"][0]["n"] == 8
