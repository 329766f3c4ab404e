"""`make demo`'s stages in their smallest setting: each runs, reruns alone, and reports."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    for name in ("tiny_model", "data", "check_data", "sft", "infer", "codec", "gres_data",
                 "mask_sft", "mask_eval", "report"):
        assert f"] {name}: " in out
    report = (tmp_path / "report.md").read_text()
    assert "| sft | swift sft (LoRA) on shapes%50 via recipes/sft_registry.sh" in report
    assert "DATASETS=shapes%50" in report and "swift infer" in report
    assert "--dataset shapes%50" in (tmp_path / "logs" / "sft.log").read_text()
    assert "![training loss](sft_loss.png)" in report
    assert (tmp_path / "sft_loss.png").stat().st_size > 1000
    assert report.count("| ![](data/images/heldout_") == 8
    assert "shapes         12       0        12      50%         6" in report
    assert "## GRES metrics" in report and "| gIoU | cIoU | N-acc | T-acc |" in report
    assert "## Mask codec" in report and (tmp_path / "mask_sft_loss.png").is_file()
    assert list((tmp_path / "mask_eval" / "overlays").glob("*.png"))

    again = demo(tmp_path, "--stage", "infer")
    assert "[1/1] infer" in again and "report:" in again
    assert (tmp_path / "report.md").read_text().count("heldout_") == 8


def test_stage_without_its_inputs_says_what_to_run(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "data_tools" / "demo.py"), "--out",
                           str(tmp_path), "--stage", "infer"], capture_output=True, text=True,
                          env=offline_env(), timeout=300)
    assert proc.returncode != 0
    assert "stage 'sft' has not run yet" in proc.stderr
