"""NEO's stages end to end with real ms-swift commands on the tiny NEO (tiny Qwen3 ->
build_neo): PT through its recipe as two processes (the ranks' weights compared, the PT set
the only tensors that move), SFT through its recipe with LoRA whose first logged loss is the
model's own weighted loss, ``swift export`` merging the adapter, and ``swift infer`` whose
batched answers equal the merged model's batch-1 greedy decoding."""

from __future__ import annotations

import json

import pytest
import torch

from svp.neo.freeze import pt_trainable
from svp.testing.synthetic import write_llava_dataset, write_messages_dataset, write_registry
from tests.helpers import (
    REPO,
    assert_one_job,
    offline_env,
    run_recipe,
    run_swift,
    step_losses,
)

E = 2
SMALL = {"MIN_PIXELS": str(32 * 32), "MAX_PIXELS": str(96 * 96), "DTYPE": "float32",
         "NUM_WORKERS": "0", "LOGGING_STEPS": "1", "WARMUP_STEPS": "0", "SAVE_STEPS": "100"}


def only_run(out):
    runs = sorted(out.glob("v*"))
    assert len(runs) == 1, runs
    return runs[0]


def checkpoint(run):
    ckpts = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert ckpts, f"no checkpoint in {run}"
    return ckpts[-1]


def state(path):
    from svp.neo.modeling import NEOChatModel

    model, info = NEOChatModel.from_pretrained(path, dtype=torch.float32,
                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model


def offline_first_step_loss(model_dir, rows, batch, grad_acc):
    """The loss the trainer should log at step 1: the mean over the first ``grad_acc``
    micro-batches (rows in file order) of the model's weighted loss on each packed row."""
    from swift.model import get_processor
    from swift.template import get_template

    from tests.helpers import load_entry

    load_entry("neo")
    processor = get_processor(str(model_dir), model_type="neo")
    template = get_template(processor, template_type="neo")
    template.set_mode("train")
    model = state(model_dir).eval()
    losses = []
    for k in range(grad_acc):
        encoded = [template.encode(r) for r in rows[k * batch:(k + 1) * batch]]
        with torch.no_grad():
            losses.append(model(**template.data_collator(encoded)).loss.item())
    return sum(losses) / len(losses)


@pytest.mark.distributed
def test_neo_stages_end_to_end(tiny_neo, tmp_path):
    init = tiny_neo(E)
    registry = write_registry(tmp_path / "datasets.yaml", {
        "shapes": (write_llava_dataset(tmp_path / "pt", n=24, seed=3), tmp_path / "pt/images")})

    # -- PT: two processes, one job; the explicit PT set moves, nothing else does
    pt_out = tmp_path / "pt_out"
    run_recipe("neo_2b_pt.sh", tmp_path / "pt.log", tmp_path, mode="ddp", nproc=2,
               MODEL=str(init), DATASETS="shapes%50", SVP_DATASET_REGISTRY=str(registry),
               OUTPUT_DIR=str(pt_out), MAX_STEPS="2", BATCH="2", GRAD_ACC="1", LR="1e-2",
               EXTRA_ARGS="--callbacks svp_rank_check --check_model false "
                          "--split_dataset_ratio 0", **SMALL)
    pt_run = only_run(pt_out)
    digests = assert_one_job(pt_run, "ddp")
    assert all(pt_trainable(n, E) for n in digests), [n for n in digests
                                                     if not pt_trainable(n, E)][:3]
    before = state(init).state_dict()
    pt_ckpt = checkpoint(pt_run)
    after = state(pt_ckpt).state_dict()
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and all(pt_trainable(n, E) for n in moved), sorted(moved)[:5]
    assert any(".layers.0.mlp." in n for n in moved)  # a pre-buffer layer trained
    assert any(n.startswith("vision_model.") for n in moved)
    assert f"language_model.model.layers.{E}.self_attn.k_proj_hw.weight" in moved

    # -- SFT with LoRA on a plain file (text-only rows included): first loss = the model's
    data = write_messages_dataset(tmp_path / "sft", n=8, seed=4, text_only=(1, 4))
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    # micro-batch 1 supervises many more tokens than micro-batch 2: a global token count
    # (what the HF Trainer would use if the model took **kwargs) would weigh them unequally
    for r in rows[:2]:
        r["messages"][1]["content"] = " ".join(["the small red circle"] * 12) + "."
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft_out = tmp_path / "sft_out"
    run_recipe("neo_2b_sft.sh", tmp_path / "sft.log", tmp_path, mode="ddp", nproc=1,
               MODEL=str(pt_ckpt), DATASETS=str(data), OUTPUT_DIR=str(sft_out), TUNER="lora",
               LORA_RANK="4", LORA_ALPHA="8", MAX_STEPS="2", BATCH="2", GRAD_ACC="2",
               LR="1e-3", SVP_DATASET_REGISTRY="",
               EXTRA_ARGS="--check_model false --split_dataset_ratio 0 "
                          "--dataset_shuffle false --train_dataloader_shuffle false", **SMALL)
    sft_run = only_run(sft_out)
    losses = step_losses(sft_run)
    assert len(losses) == 2
    want = offline_first_step_loss(pt_ckpt, rows, batch=2, grad_acc=2)
    assert losses[0] == pytest.approx(want, rel=2e-3), (losses, want)

    # -- export: merge the adapter into a plain NEO checkpoint
    adapter = checkpoint(sft_run)
    merged = tmp_path / "merged"
    env = offline_env()
    run_swift("export", ["--adapters", str(adapter), "--merge_lora", "true",
                         "--external_plugins", str(REPO / "plugins" / "neo.py"),
                         "--output_dir", str(merged)], tmp_path / "export.log", env,
              cwd=tmp_path)
    merged_model = state(merged)
    moved = [n for n, t in merged_model.state_dict().items()
             if not torch.equal(t, after[n])]
    assert moved and all("language_model.model.layers." in n for n in moved)

    # -- infer: batched swift infer answers == batch-1 greedy generate of the merged model
    val = tmp_path / "val.jsonl"
    prompts = [{"messages": [r["messages"][0]], **({"images": r["images"]} if "images" in r
                                                    else {})} for r in rows[:3]]
    val.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    result = tmp_path / "infer.jsonl"
    run_swift("infer", ["--model", str(merged), "--model_type", "neo",
                        "--external_plugins", str(REPO / "plugins" / "neo.py"),
                        "--val_dataset", str(val), "--max_new_tokens", "5",
                        "--max_batch_size", "3", "--temperature", "0",
                        "--result_path", str(result), "--torch_dtype", "float32"],
              tmp_path / "infer.log", env, cwd=tmp_path)
    answers = [json.loads(line)["response"] for line in result.read_text().splitlines()]
    assert len(answers) == 3

    from swift.model import get_processor
    from swift.template import get_template

    processor = get_processor(str(merged), model_type="neo")
    template = get_template(processor, template_type="neo")
    template.set_mode("transformers")
    merged_model.eval()
    for prompt, answer in zip(prompts, answers, strict=True):
        batch = template.data_collator([template.encode(prompt)])
        out = merged_model.generate(**batch, max_new_tokens=5, do_sample=False)
        pad = processor.pad_token_id
        new = [t for t in out[0, batch["input_ids"].shape[1]:].tolist() if t != pad]
        text = template.decode_generate_ids(new)
        assert answer == text, (prompt, answer, text)


@pytest.mark.distributed
def test_neo_sft_zero3_two_processes(tiny_neo, tmp_path):
    """The MT/SFT recipes' default, ZeRO-3, on two processes: the NEO checkpoint loads
    partitioned through plain from_pretrained (its first logged loss is the checkpoint's own
    loss on what each rank saw), text-only rows keep the vision convs in every rank's graph,
    and the ranks end bitwise identical."""
    init = tiny_neo(E)
    data = write_messages_dataset(tmp_path / "sft", n=8, seed=5, text_only=(1, 2))
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    out = tmp_path / "out"
    run_recipe("neo_2b_sft.sh", tmp_path / "sft.log", tmp_path, mode="zero3", nproc=2,
               MODEL=str(init), DATASETS=str(data), OUTPUT_DIR=str(out), MAX_STEPS="2",
               BATCH="2", GRAD_ACC="1", LR="1e-3", SVP_DATASET_REGISTRY="",
               EXTRA_ARGS="--callbacks svp_rank_check --check_model false "
                          "--split_dataset_ratio 0 --dataset_shuffle false "
                          "--train_dataloader_shuffle false", **SMALL)
    run = only_run(out)
    digests = assert_one_job(run, "zero3")
    assert any(n.startswith("vision_model.") for n in digests)
    # each rank's first micro-batch: the samples the distributed sampler gives it in order
    per_rank = [offline_first_step_loss(init, rows[r::2], batch=2, grad_acc=1)
                for r in range(2)]
    assert step_losses(run)[0] == pytest.approx(sum(per_rank) / 2, rel=2e-3)
