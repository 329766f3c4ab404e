"""Mask-token SFT as users run it on GPUs, here in two CPU processes: the registry datasets
(``masks%75``), the 514 new tokens with ``--modules_to_save embed_tokens lm_head``, the
mask-span loss, under DDP, ZeRO-2 and ZeRO-3 (the recipe adds the CPU arguments itself).
Each run must be one job: both ranks wrapped, every trainable tensor bitwise identical at
the end, a finite falling loss, the same new-token rows as one process, and (DDP) a
two-process resume that continues from the checkpoint to the same weights."""

from __future__ import annotations

import re

import pytest

from svp.testing.synthetic import write_mask_token_dataset
from tests.helpers import (
    MODES,
    assert_finite_and_falling,
    assert_one_job,
    run_dir,
    run_recipe,
    step_losses,
)

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return write_mask_token_dataset(tmp_path_factory.mktemp("masks"), n=16, seed=3)


@pytest.fixture(scope="module")
def one_process_rows(tiny_model):
    """Rows before / after and digest of the new rows when one plain process grows the
    vocabulary."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from svp.common.vocab import add_tokens
    from svp.masktok.tokens import mask_token_list

    path = tiny_model("qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    summary = add_tokens(model, AutoTokenizer.from_pretrained(path),
                         [(mask_token_list(), False)])
    return summary["rows_before"], summary["rows_after"], summary["rows_digest"]


def sft(tiny_model, registry, out, log, mode, *extra):
    return run_recipe(
        "sft_qwen25vl_3b.sh", log, out.parent, mode,
        MODEL=str(tiny_model("qwen2_5_vl")), SVP_DATASET_REGISTRY=str(registry),
        DATASETS="masks%75", OUTPUT_DIR=str(out), BATCH="2", GRAD_ACC="1", NUM_WORKERS="0",
        LORA_RANK="8", LR="1e-3", DTYPE="float32",
        # the weighted loss (supervised columns only, svp/common/supervised_logits.py) under
        # every mode; the plain loss runs in the registry and crop-tool distributed tests
        LOSS_SCALE="default+mask_span",
        EXTRA_ARGS=" ".join(["--max_steps 4 --save_steps 2 --logging_steps 1 --seed 7",
                             "--check_model false --callbacks svp_rank_check", *extra]))


@pytest.mark.parametrize("mode", MODES)
def test_mask_token_sft_two_processes(mode, tiny_model, registry, one_process_rows, tmp_path):
    out = tmp_path / "sft"
    log = sft(tiny_model, registry, out, tmp_path / "sft.log", mode)
    assert "no GPU visible: training on CPU processes with --use_cpu true --fp16 false " \
        "--ddp_backend gloo" in log
    assert "masks.jsonl: 75% of 16 rows -> 12 rows" in log  # name%X under DDP too
    assert "--loss_scale default+mask_span" in log
    run = run_dir(out)
    digests = assert_one_job(run, mode)
    assert any(".embed_tokens." in n for n in digests), "embed_tokens not trained"
    assert_finite_and_falling(step_losses(run))
    grown = {tuple(int(x) if x.isdigit() else x for x in m) for m in re.findall(
        r"masktok: added 514 mask tokens; embedding rows (\d+) -> (\d+); new rows digest "
        r"(\w+)", log)}
    assert grown == {one_process_rows}, f"new rows {grown} vs one process {one_process_rows}"
    if mode != "ddp":
        return
    # resume from the step-2 checkpoint: two processes again, steps 3-4, the same weights
    resumed = tmp_path / "resumed"
    log = sft(tiny_model, registry, resumed, tmp_path / "resume.log", mode,
              f"--resume_from_checkpoint {run / 'checkpoint-2'}")
    again = run_dir(resumed)
    from svp.common.run_log import step_rows

    assert [r["step"] for r in step_rows(again / "logging.jsonl")] == [3, 4]
    assert assert_one_job(again, mode) == digests, "the resumed run ended elsewhere"
