"""Crop-tool data shared by the R-GRPO tests: one 640x480 picture, crop-SFT rows whose answer
calls the tool, and RL rows written by data_tools/convert_rl.py (with their boxes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import convert_rl
from tests.helpers import REPO, SWIFT, offline_env

ANSWER = "<think>look <tool_call>[10, 10, 60, 60]</tool_call> left part</think><answer>cat</answer>"
SMALL = {"SVP_CROP_MAIN_SHORT": "112", "SVP_CROP_MAX_SHORT": "112"}  # CPU-sized images


@pytest.fixture(scope="session")
def crop_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlmr3")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(root / "scene.png")
    sft = {"messages": [{"role": "user", "content": "<image>What is it?"},
                        {"role": "assistant", "content": ANSWER}],
           "images": [str(root / "scene.png")]}
    (root / "sft.jsonl").write_text((json.dumps(sft) + "\n") * 16)
    rl = {"image_path": "scene.png", "question": "What is it?", "answer": "cat",
          "bbox": [40, 40, 260, 260], "source": "demo"}
    (root / "rl_src.jsonl").write_text((json.dumps(rl) + "\n") * 8)
    assert convert_rl.main(["--input", str(root / "rl_src.jsonl"),
                            "--output", str(root / "rl.jsonl")]) == 0
    return root


CHAIN = str(REPO / "recipes" / "vlmr3_qwen25vl_7b.sh")


def chain(root, **env) -> subprocess.CompletedProcess:
    """recipes/vlmr3_qwen25vl_7b.sh on the tiny model with CPU-sized stages (crop SFT: full
    tuning, 40 steps at a constant 1e-2, which teaches a random tiny model the think / tool
    call / answer pattern; LoRA cannot in that budget). One plain process: ``DEEPSPEED=""``
    overrides R-GRPO's ZeRO-3 default, which the two-process tests run."""
    base = dict(
        PATH=f"{Path(SWIFT).parent}:{offline_env()['PATH']}",
        BASE_MODEL=env.pop("BASE_MODEL"), MODEL_TYPE="qwen2_5_vl",
        SFT_DATA=str(root / "sft.jsonl"), RL_DATA=str(root / "rl.jsonl"),
        WORK_DIR=str(root / "work"), SFT_TUNER="full", SFT_LR="1e-2", SFT_MAX_STEPS="40",
        SFT_BATCH="4", SFT_GRAD_ACC="1", SFT_WARMUP="0", SFT_SAVE_STEPS="40",
        SFT_NUM_WORKERS="0", SFT_GRAD_CKPT="false", SFT_DTYPE="float32",
        SFT_EXTRA_ARGS="--lr_scheduler_type constant --check_model false --save_only_model true",
        RL_NUM_GENERATIONS="4", RL_BATCH="4", RL_GRAD_ACC="1", RL_MAX_STEPS="3",
        RL_MAX_TURNS="3", RL_MAX_COMPLETION_LENGTH="40", RL_LR="1e-5", RL_TEMPERATURE="0.7",
        RL_DTYPE="float32", RL_NUM_WORKERS="0", RL_GRAD_CKPT="false",
        RL_EXTRA_ARGS="--check_model false --save_strategy no", DEEPSPEED="", **SMALL)
    base.update(env)
    return subprocess.run(["bash", CHAIN], capture_output=True, text=True, timeout=900,
                          env=offline_env(**base))


@pytest.fixture(scope="session")
def crop_sft_model(crop_data, tiny_model):
    """The chain's first two stages (crop SFT, then the merge stage, which for full tuning
    links the checkpoint): a tiny model that writes the think / tool call / answer pattern,
    so R-GRPO rollouts call the tool and the rewards differ within a group (a random model's
    rollouts all score the same). The chain test runs the rest of the chain on it."""
    proc = chain(crop_data, BASE_MODEL=str(tiny_model("qwen2_5_vl")), STAGES="sft merge")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert [line for line in log.splitlines() if line.startswith("[vlmr3] stage")] == [
        "[vlmr3] stage sft", "[vlmr3] stage merge"]
    return (crop_data / "work" / "sft_merged").resolve()
