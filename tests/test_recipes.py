"""Recipes: knobs from the environment, the printed command, and fast failure on bad paths.
(The demo runs recipes/sft_registry.sh for real on the tiny model.)"""

from __future__ import annotations

import subprocess

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
    assert f"--external_plugins {REPO}/plugins/datasets.py" in out
    assert "--dataset shapes%50 more%200" in out
    assert "--lora_rank 8 --lora_alpha 128 --target_modules all-linear" in out
    assert "--deepspeed zero2" in out and out.rstrip().endswith("--seed 7")


def test_full_tuning_has_no_lora_flags(shapes_registry):
    proc = run(DRY_RUN="1", DATASETS="shapes", SVP_DATASET_REGISTRY=str(shapes_registry),
               TUNER="full")
    assert proc.returncode == 0 and "--tuner_type full" in proc.stdout
    assert "--lora_rank" not in proc.stdout


def test_missing_inputs_fail_fast(tmp_path, shapes_registry):
    proc = run(DRY_RUN="1", DATASETS="x", SVP_DATASET_REGISTRY=str(tmp_path / "none.yaml"))
    assert proc.returncode == 2 and "registry file not found" in proc.stderr
    proc = run(DRY_RUN="1", DATASETS="x", SVP_DATASET_REGISTRY=str(shapes_registry),
               MODEL=str(tmp_path / "no_model"))
    assert proc.returncode == 2 and "model directory not found" in proc.stderr
    proc = run(DRY_RUN="1", SVP_DATASET_REGISTRY=str(shapes_registry))
    assert proc.returncode != 0 and "set DATASETS" in proc.stderr
