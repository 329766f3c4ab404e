"""CoVT where users run it, here in two CPU processes under DDP, ZeRO-2 and ZeRO-3, through
recipes/covt_qwen25vl_7b.sh with stand-in experts: all four stages in one run
(understanding, generation, reasoning, efficient) on rows that include text-only ones, and
the expert losses switched off after step 6 (``AUX_UNTIL``), so some steps supervise part of
the heads and the last two none, and only the new tokens' rows trainable (the default).
Each run must be one job (both ranks wrapped, every
trainable tensor, heads included, bitwise identical at the end; under DDP with
``--ddp_find_unused_parameters false``, which fails or silently diverges when a step skips a
head); the stage follows the global step; under DDP the recipe's own resume continues from
the checkpoint, stage schedule included, to the same weights, also after a resumed run was
killed (SIGKILL) while writing a checkpoint."""

from __future__ import annotations

import math
import re
import shutil

import pytest

from svp.common.run_log import step_rows
from svp.testing.synthetic import write_messages_dataset
from tests.helpers import MODES_DDP_ZERO3, REPO, assert_one_job, run_dir, run_recipe

pytestmark = pytest.mark.distributed
SCHEDULE = "understanding@0,generation@2,reasoning@4,efficient@6"


@pytest.fixture(scope="module")
def one_process_rows(tiny_model):
    """Rows before / after and digest of the new rows, as one plain process writes them (the
    tiny model has room for them: no resize, so a partitioned ZeRO-3 load must write into
    the matrix it has rather than "grow" it from an empty shard to fewer rows)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from svp.common.vocab import add_tokens
    from svp.covt.tokens import TAG_TOKENS, ThoughtConfig

    path = tiny_model("qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    tokens = ThoughtConfig.parse("sam,depth").new_tokens()
    summary = add_tokens(model, AutoTokenizer.from_pretrained(path),
                         [(tokens[:2], True), (tokens[2:], False), (list(TAG_TOKENS), False)],
                         seed=1)
    assert summary["rows_before"] == summary["rows_after"]
    return summary["rows_before"], summary["rows_after"], summary["rows_digest"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return write_messages_dataset(tmp_path_factory.mktemp("covt"), 16, seed=6,
                                  text_only=(3, 10))


KILLER = REPO / "tests" / "common" / "kill_during_save.py"


def covt(tiny_model, data, work, log, mode, kill_at_save: int | None = None):
    strict = " --ddp_find_unused_parameters false" if mode == "ddp" else ""
    killer = {}
    if kill_at_save is not None:  # the recipe's plugin and the killer (the last flag wins)
        strict += f" --external_plugins {REPO / 'plugins' / 'covt.py'} {KILLER}"
        killer = {"SVP_TEST_KILL_AT_SAVE": str(kill_at_save)}
    cache = {}
    if mode == "zero3":  # the compact target cache (SAM's masks read, forward passes rerun)
        from data_tools import cache_expert_targets

        cache_dir = work.parent / "cache"
        assert cache_expert_targets.main(["--dataset", str(data), "--cache", str(cache_dir),
                                          "--experts", "sam,depth", "--backend",
                                          "standin"]) == 0
        cache["SVP_COVT_CACHE"] = str(cache_dir)
    return run_recipe(
        "covt_qwen25vl_7b.sh", log, work.parent, mode, **cache, **killer,
        expect_ok=kill_at_save is None,
        SVP_COVT_BACKEND="standin", SVP_COVT_EXPERTS="sam,depth",
        BASE_MODEL=str(tiny_model("qwen2_5_vl")), DATA=str(data), WORK_DIR=str(work),
        RUNS=f"{SCHEDULE}:8:6", LR="1e-3", BATCH="2", SAVE_STEPS="4", NUM_WORKERS="0",
        GRAD_CKPT="false", DTYPE="float32", MAX_PIXELS="50176",
        EXTRA_ARGS="--check_model false --logging_steps 1 --seed 7 "
                   "--callbacks covt_stage svp_rank_check" + strict)


@pytest.mark.parametrize("mode", MODES_DDP_ZERO3)
def test_covt_four_stages_two_processes(mode, tiny_model, rows, one_process_rows, tmp_path):
    work = tmp_path / "work"
    log = covt(tiny_model, rows, work, tmp_path / "covt.log", mode)
    grown = {tuple(int(x) if x.isdigit() else x for x in m) for m in re.findall(
        r"covt: added 8 visual-thought tokens and reasoning tags; embedding rows (\d+) -> "
        r"(\d+); new rows "
        r"digest (\w+)", log)}
    assert grown == {one_process_rows}, f"rows {grown} vs one process {one_process_rows}"
    out = work / "run1_understanding"
    run = run_dir(out)
    digests = assert_one_job(run, mode)
    assert any("covt_heads" in n and ".heads.sam." in n for n in digests)
    assert any("covt_heads" in n and ".heads.depth." in n for n in digests)
    # the new tokens' rows (TRAIN_NEW_ROWS=1, the recipe's default), not whole matrices
    assert sum("trainable_tokens_delta" in n for n in digests) == 2
    assert not any(n.endswith(("embed_tokens.weight", "lm_head.weight")) for n in digests)
    logged = step_rows(run / "logging.jsonl")
    assert [r["step"] for r in logged] == list(range(1, 9))
    assert [r["covt_stage"] for r in logged] == [0, 0, 1, 1, 2, 2, 3, 3]  # by global step
    assert all(math.isfinite(r["loss"]) for r in logged)
    for name in ("covt_sam", "covt_depth"):  # each expert's loss went below its start
        values = [r[name] for r in logged if name in r]
        assert len(values) == 6 and min(values[1:]) < values[0], (name, values)
    assert [("covt_aux" in r) for r in logged] == [True] * 6 + [False] * 2  # AUX_UNTIL=6
    if mode == "zero3":  # every supervised image's targets came from the cache
        cached = [r["covt_cached"] for r in logged if "covt_cached" in r]
        assert cached and all(c == 1 for c in cached), cached
    assert (work / "run1_understanding_merged" / ".done").exists()
    if mode != "ddp":
        return
    # the recipe's own resume: the run is not done, its newest checkpoint is step 4; that
    # resumed run is killed (SIGKILL, rank 0) while it writes checkpoint 8, and the recipe
    # run again passes over the half-written folder and resumes from step 4 once more
    # (before: it picked the half-written one and failed the same way on every rerun)
    (out / ".done").unlink()
    shutil.rmtree(work / "run1_understanding_merged")
    shutil.rmtree(run / "checkpoint-8")
    log = covt(tiny_model, rows, work, tmp_path / "killed.log", mode, kill_at_save=8)
    assert f"resuming from {run / 'checkpoint-4'}" in log and "kill_during_save: SIGKILL" in log
    killed = run_dir(out)
    half = killed / "checkpoint-8"
    assert half.is_dir() and not (half / "trainer_state.json").exists()
    assert not (out / ".done").exists()
    log = covt(tiny_model, rows, work, tmp_path / "resume.log", mode)
    assert f"passing over {half}: incomplete, no trainer_state.json" in log
    assert f"resuming from {run / 'checkpoint-4'}" in log
    assert "covt: schedule starts at global step 4 (stage reasoning)" in log
    again = run_dir(out)
    assert again not in (run, killed)
    resumed = step_rows(again / "logging.jsonl")
    assert [(r["step"], r["covt_stage"]) for r in resumed] == [(5, 2), (6, 2), (7, 3), (8, 3)]
    assert assert_one_job(again, mode) == digests, "the resumed run ended elsewhere"
