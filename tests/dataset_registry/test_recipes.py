"""Recipes: knobs from the environment, the printed command, and fast failure on bad paths.
(The demo runs recipes/sft_registry.sh for real on the tiny model.)"""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import REPO, offline_env

RECIPE = str(REPO / "recipes" / "sft_registry.sh")


def run(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", RECIPE], capture_output=True, text=True, timeout=60,
                          env=offline_env(**env))


def test_dry_run_prints_the_swift_command_with_knobs(shapes_registry):
    proc = run(DRY_RUN="1", DATASETS="shapes%50 more%200",
               SVP_DATASET_REGISTRY=str(shapes_registry), TUNER="lora", LORA_RANK="8",
               DEEPSPEED="zero2", NPROC_PER_NODE="4", EXTRA_ARGS="--seed 7")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"SVP_DATASET_REGISTRY={shapes_registry}" in out
    assert f"--external_plugins {REPO}/plugins/dataset_registry.py" in out
    assert "--dataset shapes%50 more%200" in out
    assert "--lora_rank 8 --lora_alpha 128 --lora_dropout 0.05 --target_modules all-linear" in out
    assert "--deepspeed zero2" in out and out.rstrip().endswith("--seed 7")


def test_a_model_the_planner_lacks_is_a_note_not_an_error(shapes_registry):
    proc = run(DRY_RUN="1", DATASETS="shapes", SVP_DATASET_REGISTRY=str(shapes_registry),
               MODEL="someone/UnknownVL-7B")
    assert proc.returncode == 0, proc.stderr
    assert "note: no memory plan for MODEL=someone/UnknownVL-7B: no config for" in proc.stderr
    assert "error" not in proc.stderr.lower()


def test_full_tuning_has_no_lora_flags(shapes_registry):
    proc = run(DRY_RUN="1", DATASETS="shapes", SVP_DATASET_REGISTRY=str(shapes_registry),
               TUNER="full")
    assert proc.returncode == 0 and "--tuner_type full" in proc.stdout
    assert "--lora_rank" not in proc.stdout


def test_missing_inputs_fail_fast(tmp_path, shapes_registry):
    proc = run(DRY_RUN="1", DATASETS="x", SVP_DATASET_REGISTRY=str(tmp_path / "none.yaml"))
    assert proc.returncode == 2 and "registry file not found" in proc.stderr
    # (a real run: a dry run accepts stage outputs that a chain writes later)
    proc = run(DATASETS="x", SVP_DATASET_REGISTRY=str(shapes_registry),
               MODEL=str(tmp_path / "no_model"))
    assert proc.returncode == 2 and "model directory not found" in proc.stderr
    proc = run(DRY_RUN="1", SVP_DATASET_REGISTRY=str(shapes_registry))
    assert proc.returncode != 0 and "set DATASETS" in proc.stderr


def _dry(recipe: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "recipes" / recipe)], capture_output=True,
                          text=True, timeout=60, env=offline_env(DRY_RUN="1", **env))


def test_mask_token_recipes_follow_the_samtok_settings(shapes_registry):
    for recipe, model, mtype in (("sft_qwen3vl_4b.sh", "Qwen/Qwen3-VL-4B-Instruct", "qwen3_vl"),
                                 ("sft_qwen25vl_3b.sh", "Qwen/Qwen2.5-VL-3B-Instruct",
                                  "qwen2_5_vl")):
        proc = _dry(recipe, DATASETS="gres_train", SVP_DATASET_REGISTRY=str(shapes_registry))
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert f"--model {model} --model_type {mtype} --template {mtype}" in out
        # upstream's recipe: plain next-token loss, LoRA 128/256/0.05, one epoch; Qwen3-VL
        # images up to 2048 tokens (IMAGE_MAX_TOKEN_NUM=2048 = MAX_PIXELS 2048 x 32^2)
        assert f"{REPO}/plugins/masktok.py" in out and "--loss_scale default " in out
        assert ("MAX_PIXELS=2097152" if mtype == "qwen3_vl" else "MAX_PIXELS=1003520") in out
        for flag in ("--lora_rank 128", "--lora_alpha 256", "--lora_dropout 0.05",
                     "--num_train_epochs 1", "--target_modules all-linear",
                     "--modules_to_save embed_tokens lm_head", "--freeze_vit true",
                     "--freeze_aligner true", "--learning_rate 2e-5", "--torch_dtype bfloat16"):
            assert flag in out, flag
        overridden = _dry(recipe, DATASETS="g", SVP_DATASET_REGISTRY=str(shapes_registry),
                          LR="1e-4", LORA_RANK="8", DTYPE="float16")
        assert "--learning_rate 1e-4" in overridden.stdout and "--lora_rank 8" in overridden.stdout
        assert "--torch_dtype float16" in overridden.stdout
        weighted = _dry(recipe, DATASETS="g", SVP_DATASET_REGISTRY=str(shapes_registry),
                        LOSS_SCALE="default+mask_span")
        assert "--loss_scale default+mask_span" in weighted.stdout  # our option, opt-in
        rows = _dry(recipe, DATASETS="g", SVP_DATASET_REGISTRY=str(shapes_registry),
                    TUNER="lora_new_rows")  # only the new rows, not the whole matrices
        assert rows.returncode == 0, rows.stderr
        assert "--tuner_type lora_new_rows" in rows.stdout and "--lora_rank 128" in rows.stdout
        assert "--modules_to_save" not in rows.stdout


def test_plm_recipe_follows_samtoks_plm_config(shapes_registry):
    """recipes/sft_plm_1b.sh = SAMTok's perceptionlm_1b_mt256x2 settings: full LLM tuning,
    tower and projector frozen, AdamW 2e-5 without weight decay, clip 1, 3% warmup + cosine,
    batch 4, one epoch, max length 16384, bf16, 8 tiles per image."""
    proc = _dry("sft_plm_1b.sh", DATASETS="gres_train", SVP_DATASET_REGISTRY=str(shapes_registry))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "--model facebook/Perception-LM-1B --model_type perception_lm --template " \
           "perception_lm" in out and f"{REPO}/plugins/masktok.py" in out
    for flag in ("--tuner_type full", "--freeze_vit true", "--freeze_aligner true",
                 "--learning_rate 2e-5", "--weight_decay 0", "--max_grad_norm 1",
                 "--warmup_ratio 0.03", "--lr_scheduler_type cosine",
                 "--per_device_train_batch_size 4", "--gradient_accumulation_steps 1",
                 "--num_train_epochs 1", "--max_length 16384", "--torch_dtype bfloat16",
                 "--loss_scale default "):
        assert flag in out, flag
    assert "--lora_rank" not in out and "--modules_to_save" not in out
    assert "SVP_PLM_MAX_TILES=8" in out


def test_unknown_plugin_name_fails_fast(shapes_registry):
    proc = run(DRY_RUN="1", DATASETS="x", SVP_DATASET_REGISTRY=str(shapes_registry),
               PLUGINS="nothere")
    assert proc.returncode == 2 and "no plugin entry" in proc.stderr


@pytest.mark.parametrize(("value", "ok"), [
    ("Qwen/Qwen2.5-VL-7B-Instruct", True),   # a hub id
    ("here", True),                          # a local folder (made below)
    ("here/model", False),                   # here/ is local: a path, and it is missing
    ("output/vlmr3/sft_merged", False),      # the README's old R-GRPO input: no such folder
    ("./gone", False),
])
def test_recipes_refuse_a_relative_model_path_that_is_not_there(tmp_path, value, ok):
    """ms-swift took a missing relative folder for a hub id and failed on the network
    (``listing failed``); the recipes stop first, unless it is a plausible org/name."""
    (tmp_path / "here").mkdir()
    proc = subprocess.run(["bash", "-c", f'source {REPO / "recipes" / "common.sh"}; '
                           f'svp_check_model MODEL "{value}" && echo accepted'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env=offline_env())
    assert (proc.stdout.strip() == "accepted") is ok, proc.stderr
    if not ok:
        assert proc.returncode == 2 and f"error: MODEL={value}" in proc.stderr
