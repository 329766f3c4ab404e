"""The whole VLM-R3 chain on the tiny model on CPU: recipes/vlmr3_qwen25vl_7b.sh runs crop SFT
(full tuning: a random tiny model learns to call the tool in 40 steps; LoRA cannot in that
budget) -> merge stage -> ``swift rlhf --rlhf_type grpo`` with the crop_tool scheduler and
the six rewards. Then the LoRA branch of the merge stage on its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from svp.croptool.format import VISION_BLOCK
from svp.croptool.rewards import REWARDS
from tests.croptool.conftest import SMALL
from tests.helpers import REPO, SWIFT, offline_env

CHAIN = str(REPO / "recipes" / "vlmr3_qwen25vl_7b.sh")


def chain(root, **env) -> subprocess.CompletedProcess:
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
        RL_EXTRA_ARGS="--check_model false --save_strategy no", **SMALL)
    base.update(env)
    return subprocess.run(["bash", CHAIN], capture_output=True, text=True, timeout=900,
                          env=offline_env(**base))


@pytest.mark.slow
def test_vlmr3_chain_sft_merge_grpo_executes_crops(crop_data, tiny_model):
    data = crop_data
    proc = chain(data, BASE_MODEL=str(tiny_model("qwen2_5_vl")))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert [line for line in log.splitlines() if line.startswith("[vlmr3] stage")] == [
        "[vlmr3] stage sft", "[vlmr3] stage merge", "[vlmr3] stage grpo"]
    work = data / "work"
    run = next((work / "rgrpo").glob("v*"))
    # every reward logged separately, at every step
    logs = [json.loads(x) for x in (run / "logging.jsonl").read_text().splitlines()]
    steps = [x for x in logs if "reward" in x]
    assert len(steps) == 3
    for name in REWARDS:
        assert all(f"rewards/{name}/mean" in x and f"rewards/{name}/std" in x for x in steps)
    assert any(run.glob("runs/**/events.out.tfevents.*"))
    # at least one rollout executed a crop: its vision block right after </tool_call>
    rows = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    completions = [c for r in rows for c in r["completion"]]
    executed = [c for c in completions if "</tool_call>" + VISION_BLOCK in c]
    assert executed, completions
    assert max(v for r in rows for v in r["rgrpo_tool"]) == 1.0 or any(
        r["rgrpo_crop_valid"] for r in rows)
    assert all(v is None or 0.0 <= v <= 1.0 for r in rows for v in r["rgrpo_region_iou"])
    # resume: finished stages are skipped on a rerun
    again = chain(data, BASE_MODEL=str(tiny_model("qwen2_5_vl")), STAGES="sft merge")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "sft: " in again.stdout and "skipped" in again.stdout
    assert "stage sft" not in again.stdout


@pytest.mark.slow
def test_merge_stage_merges_a_lora_checkpoint(crop_data, tiny_model):
    """SFT_TUNER=lora: the merge stage runs ``swift export --merge_lora`` on the newest SFT
    checkpoint and the merged folder is a loadable full model."""
    from swift.model import get_model_processor

    work = crop_data / "lora_work"
    proc = chain(crop_data, BASE_MODEL=str(tiny_model("qwen2_5_vl")), WORK_DIR=str(work),
                 SFT_TUNER="lora", SFT_MAX_STEPS="2", SFT_SAVE_STEPS="2", STAGES="sft merge")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    merged = work / "sft_merged"
    assert (merged / ".done").exists() and (merged / "config.json").exists()
    assert not (merged / "adapter_config.json").exists()
    model, _ = get_model_processor(str(merged), model_type="qwen2_5_vl")
    assert not any("lora" in n for n, _ in model.named_parameters())
