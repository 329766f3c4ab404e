"""CoVT end to end with real ``swift sft`` / ``swift export`` on the tiny Qwen2.5-VL, CPU, two
stand-in experts (SAM, depth): the expert losses are logged per expert and fall, the stage
follows the global step, the checkpoint holds the heads and
no base weights, cached targets give the on-the-fly losses, and the recipe chains runs and
merges (the second run restores the first run's heads, only the new tokens' rows train, and a
merged model is a plain Qwen2.5-VL checkpoint)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open

from data_tools import cache_expert_targets
from svp.common.run_log import step_rows
from svp.testing.synthetic import write_messages_dataset
from tests.helpers import REPO, SWIFT, last_checkpoint, offline_env, run_swift

COVT = {"SVP_COVT_BACKEND": "standin", "SVP_COVT_EXPERTS": "sam,depth",
        "SVP_COVT_SCHEDULE": "understanding@0,generation@3,reasoning@6"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("covt")
    write_messages_dataset(root, 16)
    return root


def sft(model, data, out, log, *extra, env=None, steps=8):
    args = ["--external_plugins", str(REPO / "plugins" / "covt.py"), "--model", str(model),
            "--model_type", "covt_qwen2_5_vl", "--template", "qwen2_5_vl_covt",
            "--callbacks", "covt_stage", "--tuner_type", "lora", "--modules_to_save",
            "covt_heads", "--dataset", str(data / "train.jsonl"), "--max_steps", str(steps),
            "--save_steps", "4", "--learning_rate", "1e-3", "--check_model", "false",
            "--per_device_train_batch_size", "2", "--logging_steps", "1",
            "--dataloader_num_workers", "0", "--report_to", "tensorboard", "--torch_dtype",
            "float32", "--output_dir", str(out), "--seed", "7", *extra]
    return run_swift("sft", args, log, offline_env(**COVT, **(env or {})), data, timeout=600)


def steps_of(out: Path, version: str = "v0") -> list[dict]:
    run = next(out.glob(f"{version}-*"))
    return [r for r in step_rows(run / "logging.jsonl") if "covt_sam" in r]


@pytest.mark.slow
def test_expert_losses_fall_and_cached_targets_give_the_on_the_fly_losses(data, tiny_model):
    """One plain ``swift sft`` with the experts run in the step: per-expert losses logged (and
    to TensorBoard) and falling, the stage following the global step, a checkpoint of LoRA +
    heads only. Then both cache contents give its first-step losses: compact (SAM's masks;
    the forward passes rerun in the step) and full (every target in fp16, no expert in the
    step). (Resume, stage schedule included, is tested through the recipe in two processes:
    tests/covt/test_distributed.py.)"""
    model = tiny_model("qwen2_5_vl")
    out = data / "fly"
    sft(model, data, out, data / "fly.log")
    fly = steps_of(out)
    assert len(fly) == 8 and [r["covt_cached"] for r in fly] == [0] * 8
    stages = [r["covt_stage"] for r in fly]
    assert stages == [0, 0, 0, 1, 1, 1, 2, 2]  # understanding, generation, reasoning by step
    for name in ("covt_sam", "covt_depth"):
        first, last = fly[0][name], sum(r[name] for r in fly[-3:]) / 3
        assert last < 0.8 * first, (name, first, last)
    tb = next(out.glob("v0-*/runs"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert {"train/covt_sam", "train/covt_depth", "train/covt_aux"} <= set(acc.Tags()["scalars"])

    # the checkpoint: LoRA + the heads, no base weights
    ckpt = last_checkpoint(out)
    with safe_open(str(ckpt / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    heads = [k for k in keys if ".covt_heads." in k]
    assert {k.split(".heads.")[1].split(".")[0] for k in heads} == {"sam", "depth"}
    assert all("lora_" in k or ".covt_heads." in k for k in keys)
    size = (ckpt / "adapter_model.safetensors").stat().st_size
    base = sum(f.stat().st_size for f in Path(model).glob("*.safetensors"))
    assert size < 0.01 * base, (size, base)

    for contents in ("compact", "full"):
        cache = data / f"cache_{contents}"
        assert cache_expert_targets.main(["--dataset", str(data / "train.jsonl"), "--cache",
                                          str(cache), "--experts", "sam,depth", "--backend",
                                          "standin", "--contents", contents]) == 0
        out = data / f"cached_{contents}"
        cached = sft(model, data, out, data / f"{contents}.log", steps=3,
                     env={"SVP_COVT_CACHE": str(cache)}) and steps_of(out)
        assert [r["covt_cached"] for r in cached] == [1, 1, 1]
        # same model, same batch: the same losses (full: within fp16 rounding; later steps
        # drift, Adam's first updates amplify the rounding of near-zero gradients)
        a, b = cached[0], fly[0]
        assert abs(a["covt_sam"] - b["covt_sam"]) < 1e-3 and abs(
            a["covt_depth"] - b["covt_depth"]) < 1e-3, (contents, a, b)


@pytest.mark.slow
def test_recipe_runs_stages_with_merges_and_restores_heads(data, tiny_model):
    """Two runs with a merge after each, as upstream trains only the new tokens' rows
    (TRAIN_NEW_ROWS=1): every other embedding / LM-head row of the final model is the base
    model's, bit for bit; the merged folders are plain Qwen2.5-VL checkpoints that the stock
    class loads strictly, with the heads beside them, restored by the next run."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from svp.covt.tokens import TAG_TOKENS, ThoughtConfig

    base = tiny_model("qwen2_5_vl")
    work = data / "work"
    env = offline_env(**{k: v for k, v in COVT.items() if k != "SVP_COVT_SCHEDULE"},
                      PATH=f"{Path(SWIFT).parent}:{offline_env()['PATH']}",
                      BASE_MODEL=str(base), DATA=str(data / "train.jsonl"),
                      WORK_DIR=str(work), RUNS="understanding:3 generation@0,reasoning@2:4:3",
                      LR="1e-2", BATCH="2", SAVE_STEPS="2", NUM_WORKERS="0", GRAD_CKPT="false",
                      DTYPE="float32", MAX_PIXELS="50176", EXTRA_ARGS="--check_model false")
    recipe = str(REPO / "recipes" / "covt_qwen25vl_7b.sh")
    r = subprocess.run(["bash", recipe], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = r.stdout + r.stderr
    assert f"covt: restored 11 head tensors from {work / 'run1_understanding_merged'}" in text
    # upstream's optimizer groups: SAM's 7 projection / query / attention tensors at its
    # projection lr, the depth MLP's 4 at the main one
    assert "covt optimizer: 7 head tensors at lr 1e-05 (SVP_COVT_HEAD_LR), the rest at 0.01" \
        in text
    # an adapter checkpoint: LoRA, heads and the new rows' deltas, no vocabulary matrix
    # (run 2: its reasoning steps also train the tags' rows, which upstream adds as tokens)
    with safe_open(str(last_checkpoint(work / "run2_generation") /
                       "adapter_model.safetensors"), "pt") as f:
        rows = {k: f.get_tensor(k) for k in f.keys() if "trainable_tokens" in k}
    assert sorted(tuple(v.shape) for v in rows.values()) == [(8, 64)] * 2, rows.keys()
    assert all(v.abs().amin(1).min() > 0 for v in rows.values())  # every new row trained
    for merged in ("run1_understanding_merged", "run2_generation_merged"):
        assert len(load_file(str(work / merged / "covt" / "heads.safetensors"))) == 11
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            work / merged, output_loading_info=True)
        assert not any(info.values()), info  # no unknown, missing or mismatched tensors
    tok = AutoTokenizer.from_pretrained(work / "run2_generation_merged")
    new = tok.convert_tokens_to_ids(ThoughtConfig.parse("sam,depth").new_tokens()
                                    + list(TAG_TOKENS))
    start = Qwen2_5_VLForConditionalGeneration.from_pretrained(base)
    for now, was in ((model.get_input_embeddings().weight, start.get_input_embeddings().weight),
                     (model.lm_head.weight, start.lm_head.weight)):
        old = torch.ones(now.shape[0], dtype=torch.bool)
        old[new] = False
        assert torch.equal(now[old], was[old])
    again = subprocess.run(["bash", recipe], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and again.stdout.count("done, skipped") == 2
