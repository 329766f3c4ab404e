"""Resume takes the newest *complete* checkpoint: folders a killed save left behind are passed
over with the reason, by the helper, its command line and the recipes' RESUME. (A real
kill -9 while a checkpoint is written, then the CoVT recipe's own resume, runs in
tests/covt/test_distributed.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from svp.common.checkpoints import checkpoint_problem, newest_checkpoint
from tests.helpers import REPO, offline_env


def complete(folder, step, weights="model.safetensors"):
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / weights).write_bytes(b"w" * 16)
    (ckpt / "additional_config.json").write_text("{}")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


BREAKS = {
    "no trainer_state.json (a save interrupted?)":
        lambda c: (c / "trainer_state.json").unlink(),
    "additional_config.json does not parse (JSONDecodeError":
        lambda c: (c / "additional_config.json").write_text(""),
    "trainer_state.json does not parse":
        lambda c: (c / "trainer_state.json").write_text('{"global_st'),
    "trainer_state.json is for step 2, not 6":
        lambda c: (c / "trainer_state.json").write_text('{"global_step": 2}'),
    "empty weights file model.safetensors":
        lambda c: (c / "model.safetensors").write_bytes(b""),
    "no weights file": lambda c: (c / "model.safetensors").unlink(),
    "names missing or empty shards ['model-00002-of-00002.safetensors']": lambda c: (
        (c / "model.safetensors").unlink(),
        (c / "model-00001-of-00002.safetensors").write_bytes(b"w"),
        (c / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors"}}))),
}


@pytest.mark.parametrize("reason", BREAKS)
def test_an_incomplete_checkpoint_is_passed_over_with_its_reason(tmp_path, reason):
    run0, run1 = tmp_path / "v0-20261207-1", tmp_path / "v1-20261207-2"
    complete(run0, 2)
    good = complete(run0, 4)
    bad = complete(run1, 6)
    BREAKS[reason](bad)
    assert reason in checkpoint_problem(bad)
    skipped = []
    assert newest_checkpoint(tmp_path, skipped) == good
    assert len(skipped) == 1 and skipped[0][0] == bad and reason in skipped[0][1]


def test_complete_forms_and_ties(tmp_path):
    """An adapter, a DeepSpeed-only folder and a sharded model are complete; on a step tie
    the later launch wins; nothing complete gives nothing."""
    assert newest_checkpoint(tmp_path) is None
    complete(tmp_path / "v0-a", 4, weights="adapter_model.safetensors")
    ds = complete(tmp_path / "v1-b", 4, weights="unused")
    (ds / "unused").unlink()
    (ds / "global_step4").mkdir()
    (ds / "global_step4" / "mp_rank_00_model_states.pt").write_bytes(b"s")
    assert checkpoint_problem(ds) is None and newest_checkpoint(tmp_path) == ds
    sharded = complete(tmp_path / "v2-c", 3)
    (sharded / "model.safetensors").unlink()
    (sharded / "model-00001-of-00001.safetensors").write_bytes(b"w")
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00001.safetensors"}}))
    assert checkpoint_problem(sharded) is None
    assert newest_checkpoint(tmp_path) == ds  # step 4 beats step 3


def test_command_line_names_what_it_passes_over(tmp_path):
    good = complete(tmp_path / "v0-a", 2)
    bad = complete(tmp_path / "v0-a", 4)
    (bad / "trainer_state.json").unlink()
    cli = [sys.executable, "-m", "svp.common.checkpoints"]
    proc = subprocess.run([*cli, str(tmp_path)], capture_output=True, text=True,
                          env=offline_env(), timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == str(good)
    assert f"passing over {bad}: incomplete, no trainer_state.json" in proc.stderr
    check = subprocess.run([*cli, "--check", str(bad)], capture_output=True, text=True,
                           env=offline_env(), timeout=60)
    assert check.returncode == 1 and "no trainer_state.json" in check.stderr
    assert subprocess.run([*cli, "--check", str(good)], env=offline_env(),
                          timeout=60).returncode == 0


def test_recipes_resume_only_when_asked_and_only_from_complete_checkpoints(
        tmp_path, shapes_registry):
    """RESUME unset: a fresh run, said out loud when checkpoints exist (a rerun after a crash
    used to start from step 0 without a word); RESUME=1: the newest complete one; a given
    incomplete checkpoint is refused before anything starts."""
    out = tmp_path / "out"
    good = complete(out / "v0-a", 2)
    bad = complete(out / "v1-b", 4)
    (bad / "trainer_state.json").unlink()

    def dry(**env):
        return subprocess.run(["bash", str(REPO / "recipes" / "sft_registry.sh")],
                              capture_output=True, text=True, timeout=120,
                              env=offline_env(DRY_RUN="1", DATASETS="shapes", OUTPUT_DIR=str(out),
                                              SVP_DATASET_REGISTRY=str(shapes_registry), **env))

    fresh = dry()
    assert fresh.returncode == 0, fresh.stderr
    assert "--resume_from_checkpoint" not in fresh.stdout
    assert f"note: {out} already holds {good}; this run starts again from step 0" in fresh.stderr
    resumed = dry(RESUME="1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"--resume_from_checkpoint {good}" in resumed.stdout
    assert f"passing over {bad}: incomplete" in resumed.stderr
    refused = dry(RESUME=str(bad))
    assert refused.returncode == 2 and f"RESUME={bad} cannot be resumed from" in refused.stderr
