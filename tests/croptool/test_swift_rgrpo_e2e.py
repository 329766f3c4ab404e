"""The whole VLM-R3 chain on the tiny model on CPU: recipes/vlmr3_qwen25vl_7b.sh runs crop SFT
(full tuning) -> merge stage -> ``swift rlhf --rlhf_type grpo`` with the crop_tool scheduler
and the six rewards (its first two stages are the ``crop_sft_model`` fixture, shared with
the two-process R-GRPO tests). Then the LoRA branch of the merge stage on its own."""

from __future__ import annotations

import json

import pytest

from svp.croptool.format import VISION_BLOCK
from svp.croptool.rewards import REWARDS
from tests.croptool.conftest import chain


@pytest.mark.slow
def test_vlmr3_chain_sft_merge_grpo_executes_crops(crop_data, tiny_model, crop_sft_model):
    """The whole chain: the fixture ran its sft and merge stages; the same command now skips
    them (a rerun resumes at the first unfinished stage) and runs GRPO on the SFT model."""
    data = crop_data
    proc = chain(data, BASE_MODEL=str(tiny_model("qwen2_5_vl")))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert [line for line in log.splitlines() if line.startswith("[vlmr3] ")][:3] == [
        f"[vlmr3] sft: {data / 'work' / 'sft'}/.done exists, skipped",
        f"[vlmr3] merge: {data / 'work' / 'sft_merged'}/.done exists, skipped",
        "[vlmr3] stage grpo"]
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
