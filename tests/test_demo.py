"""`make demo`'s stages in their smallest setting: each runs, reruns alone, and reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.demo import STAGES
from svp.common.run_log import step_rows
from svp.croptool.rewards import REWARDS
from tests.helpers import REPO, offline_env


def demo(out, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "data_tools" / "demo.py"), "--out",
                           str(out), "--smoke", *args], capture_output=True, text=True,
                          env=offline_env(), timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_demo_smoke_and_rerun_one_stage(tmp_path):
    out = demo(tmp_path)
    names = [s.name for s in STAGES]
    assert names == ["tiny_model", "data", "check_data", "sft", "infer", "codec", "gres_data",
                     "mask_sft", "mask_eval", "crop_data", "crop_sft", "crop_infer", "rgrpo",
                     "covt", "covt_decode", "neo", "visualize", "report"]
    for i, name in enumerate(names, 1):
        assert f"[{i}/{len(names)}] {name}: " in out
    report = (tmp_path / "report.md").read_text()
    # every stage: a row with its wall time and the command it ran (also printed)
    for name in names[:-1]:
        row = next(x for x in report.splitlines() if x.startswith(f"| {name} | "))
        assert re.search(r"\| \d+\.\d s \| `", row), row
    assert "DATASETS=shapes%50" in report and "bash recipes/vlmr3_qwen25vl_7b.sh" in report
    assert "bash recipes/covt_qwen25vl_7b.sh" in out and "data_tools/visualize.py crops" in out

    # registry + mask tokens
    assert "--dataset shapes%50" in (tmp_path / "logs" / "sft.log").read_text()
    assert "shapes         12       0        12      50%         6" in report
    assert report.count("| ![](data/images/heldout_") == 8
    assert "| protocol | gIoU | cIoU | N-acc | T-acc |" in report and "## 2. Mask tokens" in report
    assert "| SAMTok (`--protocol samtok`, unconstrained) |" in report
    assert "| ours (`--protocol tokens`, constrained decoding) |" in report
    # crop tool: every held-out question had its crop executed and drawn
    results = json.loads((tmp_path / "crop_infer" / "results.json").read_text())
    assert len(results) == 2
    assert all(len(r["tool_calls"]) == len(r["crops"]) == 1 for r in results)
    assert all(Path(c).is_file() for r in results for c in r["crops"])
    assert "| 0 | 1 | 0 |" in report
    # R-GRPO: each of the six rewards logged and tabled per step
    grpo = step_rows(next((tmp_path / "vlmr3" / "rgrpo").glob("v*/logging.jsonl")))
    assert grpo and all(f"rewards/{n}/mean" in grpo[0] for n in REWARDS)
    assert "| step | " + " | ".join(sorted(REWARDS)) in report
    assert list((tmp_path / "vlmr3" / "rgrpo").glob("v*/completions.jsonl"))
    # CoVT: per-expert losses at each step, the stage moving with the global step
    covt = step_rows(next((tmp_path / "covt").glob("run1_*/v*/logging.jsonl")))
    assert [int(float(r["covt_stage"])) for r in covt] == [0, 1, 2]
    assert all(float(r[k]) > 0 for r in covt for k in ("covt_sam", "covt_depth", "covt_aux"))
    assert "| first step (1) |" in report and "| sam |" in report and "| depth |" in report
    # NEO: build from the tiny Qwen3, PT and SFT through the stage recipes, batched infer
    assert "data_tools/build_neo.py --llm" in report and "bash recipes/neo_2b_pt.sh" in report
    for stage in ("pt", "sft"):
        assert len(step_rows(tmp_path / "neo" / stage / "logging.jsonl")) >= 4
    answers = [json.loads(x) for x in (tmp_path / "neo" / "infer.jsonl").read_text().split("\n")
               if x]
    assert len(answers) == 4 and "## NEO, the native VLM" in report
    assert "| question | image | answer (swift infer, batched) |" in report
    # pictures: curves and the three kinds of visualisation, linked from the report
    for png in ("sft_loss.png", "mask_sft_loss.png", "crop_sft_loss.png", "rgrpo_rewards.png",
                "covt_losses.png", "neo_losses.png", "vis/masks/sheet.png", "vis/crops/sheet.png",
                "vis/thoughts.png"):
        assert f"]({png})" in report, png
        assert (tmp_path / png).stat().st_size > 2000, png

    # the publishable copy holds every picture the report shows
    pub = tmp_path.parent / f"{tmp_path.name}_published"
    demo(tmp_path, "--export", str(pub))
    shown = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (pub / "report.md").read_text())
    assert len(shown) >= 16 and all((pub / x).is_file() for x in shown)

    # one stage alone, from the records on disk (the cheapest that reads three others')
    again = demo(tmp_path, "--stage", "visualize")
    assert "[1/1] visualize" in again and "report:" in again
    rerun = (tmp_path / "report.md").read_text()
    assert rerun.count("heldout_") == 8 and "![CoVT losses](covt_losses.png)" in rerun


def test_stage_without_its_inputs_says_what_to_run(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "data_tools" / "demo.py"), "--out",
                           str(tmp_path), "--stage", "infer"], capture_output=True, text=True,
                          env=offline_env(), timeout=300)
    assert proc.returncode != 0
    assert "stage 'sft' has not run yet" in proc.stderr


def test_shown_commands_stay_on_one_line_and_run_in_bash():
    from data_tools.demo import _quote

    arg = "<image>\nWhat's this?\\n"
    shown = _quote(arg)
    assert "\n" not in shown
    echoed = subprocess.run(["bash", "-c", f"printf %s {shown}"], capture_output=True,
                            text=True, check=True).stdout
    assert echoed == arg


def test_data_tools_resolve_their_siblings_from_any_directory(tmp_path):
    """``python data_tools/demo.py`` (what ``make demo`` runs) and ``visualize.py`` import
    sibling modules as ``data_tools.<module>``; a user's shell has no PYTHONPATH (the tests'
    helper sets one), so the installed package must provide them: run from another folder
    without it."""
    import os

    env = {k: v for k, v in offline_env().items() if k != "PYTHONPATH"}
    code = ("import data_tools.demo_report, data_tools.eval_gres, os; "
            f"assert os.path.dirname(data_tools.__file__) == {str(REPO / 'data_tools')!r}")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PYTHONPATH" not in env and os.getcwd() != str(tmp_path)
