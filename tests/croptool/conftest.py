"""Crop-tool data shared by the R-GRPO tests: one 640x480 picture, crop-SFT rows whose answer
calls the tool, and RL rows written by data_tools/convert_rl.py (with their boxes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_tools import convert_rl

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


@pytest.fixture(scope="session")
def crop_sft_model(crop_data, tiny_model, tmp_path_factory):
    """The tiny model after 40 full-tuning crop-SFT steps (one process): it has learned to
    write the think / tool call / answer pattern, so R-GRPO rollouts call the tool and the
    rewards differ within a group (a random model's rollouts all score the same)."""
    from tests.helpers import REPO, last_checkpoint, offline_env, run_swift

    out = tmp_path_factory.mktemp("crop_sft")
    run_swift("sft", [
        "--model", str(tiny_model("qwen2_5_vl")), "--model_type", "qwen2_5_vl",
        "--template", "qwen2_5_vl_crop",
        "--external_plugins", str(REPO / "plugins" / "croptool.py"),
        "--dataset", str(crop_data / "sft.jsonl"), "--tuner_type", "full",
        "--torch_dtype", "float32", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
        "--warmup_ratio", "0", "--max_steps", "40", "--save_steps", "40",
        "--save_only_model", "true", "--per_device_train_batch_size", "4",
        "--check_model", "false", "--dataloader_num_workers", "0", "--logging_steps", "10",
        "--output_dir", str(out),
    ], out / "sft.log", offline_env(**SMALL), cwd=out)
    return last_checkpoint(out)
