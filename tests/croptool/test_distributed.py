"""The crop tool where users run it, here in two CPU processes under DDP, ZeRO-2 and ZeRO-3:
crop-tool SFT (full tuning, crops cut on the fly) and R-GRPO (crops executed inside the
rollouts, six rewards). Each run must be one job (both ranks wrapped, every trainable tensor
bitwise identical at the end); SFT's loss falls; R-GRPO's groups are formed across the
ranks (the logged advantages are those of each prompt's full group of generations) and
crops were executed; under DDP a two-process resume continues from the checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from svp.common.run_log import step_rows
from svp.croptool.format import VISION_BLOCK
from svp.croptool.rewards import REWARDS
from tests.croptool.conftest import SMALL
from tests.helpers import (
    MODES_DDP_ZERO3,
    assert_finite_and_falling,
    assert_one_job,
    run_dir,
    run_recipe,
    step_losses,
)

pytestmark = pytest.mark.distributed
SIZES = dict(**SMALL, NUM_WORKERS="0", GRAD_CKPT="false", DTYPE="float32", GRAD_ACC="1")


def crop_sft(model, data, out, log, mode, *extra):
    return run_recipe("sft_crop.sh", log, out.parent, mode, **SIZES, MODEL=str(model),
                      MODEL_TYPE="qwen2_5_vl", DATA=str(data / "sft.jsonl"),
                      OUTPUT_DIR=str(out), TUNER="full", LR="1e-3", MAX_STEPS="4", BATCH="2",
                      WARMUP="0", SAVE_STEPS="2",
                      EXTRA_ARGS=" ".join(["--check_model false --logging_steps 1 --seed 7",
                                           "--callbacks svp_rank_check", *extra]))


@pytest.mark.parametrize("mode", MODES_DDP_ZERO3)
def test_crop_sft_two_processes(mode, tiny_model, crop_data, tmp_path):
    out = tmp_path / "sft"
    crop_sft(tiny_model("qwen2_5_vl"), crop_data, out, tmp_path / "sft.log", mode)
    run = run_dir(out)
    digests = assert_one_job(run, mode)
    assert any(".layers.0.self_attn.q_proj.weight" in n for n in digests)  # full tuning
    assert_finite_and_falling(step_losses(run))
    if mode == "ddp":
        resumed = tmp_path / "resumed"
        crop_sft(tiny_model("qwen2_5_vl"), crop_data, resumed, tmp_path / "resume.log", mode,
                 f"--resume_from_checkpoint {run / 'checkpoint-2'}")
        again = run_dir(resumed)
        assert [r["step"] for r in step_rows(again / "logging.jsonl")] == [3, 4]
        assert assert_one_job(again, mode) == digests


def rgrpo(model, data, out, log, mode, *extra):
    return run_recipe("rgrpo.sh", log, out.parent, mode, **SIZES, MODEL=str(model), timeout=420,
                      MODEL_TYPE="qwen2_5_vl", DATA=str(data / "rl.jsonl"), OUTPUT_DIR=str(out),
                      NUM_GENERATIONS="4", BATCH="2", MAX_STEPS="2", MAX_TURNS="3",
                      MAX_COMPLETION_LENGTH="40", LR="1e-4", TEMPERATURE="1.0", SAVE_STEPS="1",
                      EXTRA_ARGS=" ".join(["--check_model false --seed 7",
                                           "--callbacks svp_rank_check", *extra]))


def group_advantages(row: dict) -> list[float]:
    """The advantages GRPO must give one logged group (all generations of a prompt):
    weighted reward minus the group mean, over the group std (+1e-4)."""
    total = torch.tensor([sum(w * (row[name][i] if row[name][i] is not None else 0.0)
                              for name, (_, w, _) in REWARDS.items())
                          for i in range(len(row["completion"]))], dtype=torch.float64)
    return ((total - total.mean()) / (total.std() + 1e-4)).tolist()


@pytest.mark.parametrize("mode", MODES_DDP_ZERO3)
def test_rgrpo_two_processes(mode, crop_sft_model, crop_data, tmp_path):
    from transformers import AutoModelForImageTextToText

    from svp.common.swift_trainer import tensor_digest

    out = tmp_path / "rgrpo"
    rgrpo(crop_sft_model, crop_data, out, tmp_path / "rgrpo.log", mode)
    run = run_dir(out)
    digests = assert_one_job(run, mode)
    losses = step_losses(run)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # the policy moved: some trained tensor differs from the crop-SFT model it started from
    start = AutoModelForImageTextToText.from_pretrained(crop_sft_model, dtype=torch.float32)
    before = {n: tensor_digest(p) for n, p in start.named_parameters()}
    assert any(before.get(n) not in (None, d) for n, d in digests.items())
    # each step's group holds the 4 generations of one prompt, made on both ranks, and the
    # logged advantages are that whole group's (a group split per rank would give others)
    logged = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    rows = list({r["step"][0]: r for r in logged}.values())  # ms-swift logs the last twice
    assert sorted(r["step"][0] for r in rows) == ["1", "2"]
    for row in rows:
        assert len(row["completion"]) == 4 and len(set(row["prompt"])) == 1
        assert row["advantages"] == pytest.approx(group_advantages(row), abs=1e-3)
    assert any(len({round(a, 6) for a in r["advantages"]}) > 1 for r in rows), \
        "no reward difference inside any group: nothing for GRPO to learn from"
    completions = [c for r in rows for c in r["completion"]]
    assert any("</tool_call>" + VISION_BLOCK in c for c in completions), "no crop executed"
    if mode == "ddp":
        resumed = tmp_path / "resumed"
        rgrpo(crop_sft_model, crop_data, resumed, tmp_path / "resume.log", mode,
              f"--resume_from_checkpoint {run / 'checkpoint-1'}")
        again = run_dir(resumed)
        assert [r["step"] for r in step_rows(again / "logging.jsonl")] == [2]
        assert_one_job(again, mode)
