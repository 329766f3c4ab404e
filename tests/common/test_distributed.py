"""The pieces every training run gets (svp/common/swift_trainer.py): the one-job guard, the
rank check, multi-node launching through the recipes, and full-checkpoint resume."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch

from svp.common.swift_trainer import differing, tensor_digest
from svp.testing.synthetic import write_mask_token_dataset
from tests.helpers import (
    REPO,
    TEMPLATE_ARGS,
    TRAIN_ARGS,
    assert_one_job,
    free_port,
    offline_env,
    run_swift,
)


def test_digests_are_bitwise_and_differences_named():
    a = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    bits = a.view(torch.int16).clone()
    bits[1] += 1  # the next bf16 value after 2.0: one bit apart
    b = bits.view(torch.bfloat16)
    assert tensor_digest(a) == tensor_digest(a.clone()) != tensor_digest(b)
    records = [{"trainable": {"x": "1", "y": "2"}}, {"trainable": {"x": "1", "y": "3"}},
               {"trainable": {"x": "1"}}]
    assert differing(records) == ["y"]


def test_the_guard_wants_the_launched_world_in_distributed_mode():
    from types import SimpleNamespace

    from transformers.training_args import ParallelMode

    from svp.common.swift_trainer import NotOneJobError, check_one_job

    one_job = SimpleNamespace(world_size=2, parallel_mode=ParallelMode.DISTRIBUTED)
    check_one_job(one_job, launched=2)
    check_one_job(SimpleNamespace(world_size=1, parallel_mode=ParallelMode.NOT_PARALLEL), 1)
    for alone in (SimpleNamespace(world_size=1, parallel_mode=ParallelMode.NOT_PARALLEL),
                  # --ddp_backend gloo without --use_cpu: two processes counted, none wrapped
                  SimpleNamespace(world_size=2, parallel_mode=ParallelMode.NOT_PARALLEL)):
        with pytest.raises(NotOneJobError, match="every rank would train alone"):
            check_one_job(alone, launched=2)


@pytest.mark.distributed
@pytest.mark.parametrize("backend", [[], ["--ddp_backend", "gloo"]], ids=["plain", "gloo"])
def test_a_multi_process_run_that_is_not_one_job_stops(tiny_model, tmp_path, backend):
    """torchrun with two processes on a machine without a GPU and no --use_cpu: transformers
    would train each rank alone (different weights, exit 0); the guard stops it."""
    registry = write_mask_token_dataset(tmp_path / "data", n=8)
    env = offline_env(NPROC_PER_NODE="2", MASTER_PORT=str(free_port()),
                      SVP_DATASET_REGISTRY=str(registry))
    log = run_swift("sft", [
        "--model", str(tiny_model("qwen2_5_vl")), *TEMPLATE_ARGS["qwen2_5_vl"],
        "--external_plugins", str(REPO / "plugins" / "dataset_registry.py"),
        "--dataset", "masks", "--tuner_type", "lora", "--max_steps", "2",
        "--output_dir", str(tmp_path / "out"), *TRAIN_ARGS, *backend,
    ], tmp_path / "sft.log", env, cwd=tmp_path, expect_ok=False)
    assert "NotOneJobError: 2 processes were launched but the trainer runs" in log
    assert "--use_cpu true --ddp_backend gloo" in log
    assert not list((tmp_path / "out").glob("v*/checkpoint-*")), "a step was trained"


@pytest.mark.distributed
def test_two_nodes_one_process_each(tiny_model, tmp_path):
    """The recipe as two nodes of one process each on localhost (NNODES, NODE_RANK,
    MASTER_ADDR, MASTER_PORT passed through to ms-swift's launcher): one job of two ranks."""
    registry = write_mask_token_dataset(tmp_path / "data", n=8)
    port = str(free_port())
    common = dict(NPROC_PER_NODE="1", NNODES="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                  MODEL=str(tiny_model("qwen2_5_vl")), SVP_DATASET_REGISTRY=str(registry),
                  DATASETS="masks", OUTPUT_DIR=str(tmp_path / "out"), BATCH="2",
                  GRAD_ACC="1", NUM_WORKERS="0", LORA_RANK="8", LR="1e-3", DTYPE="float32",
                  EXTRA_ARGS="--max_steps 2 --save_steps 2 --logging_steps 1 --add_version "
                             "false --check_model false --callbacks svp_rank_check")
    procs = {}

    def node(rank: str) -> None:
        procs[rank] = subprocess.run(
            ["bash", str(REPO / "recipes" / "sft_qwen25vl_3b.sh")], cwd=tmp_path,
            env=offline_env(**common, NODE_RANK=rank), capture_output=True, text=True,
            timeout=600)

    threads = [threading.Thread(target=node, args=(r,)) for r in ("0", "1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rank, proc in sorted(procs.items()):
        (tmp_path / f"node{rank}.log").write_text(proc.stdout + proc.stderr)
    for rank, proc in sorted(procs.items()):
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, (f"node {rank} failed (logs: {tmp_path}/node*.log):\n"
                                      f"{out[-3000:]}")
        assert f"NNODES=2 NODE_RANK={rank} MASTER_ADDR=127.0.0.1 MASTER_PORT={port}" in out
        assert "--ddp_backend gloo" in out  # two ranks in all: gloo although one per node
    assert_one_job(tmp_path / "out", "ddp")


def test_recipe_refuses_an_incomplete_multi_node_launch(tmp_path):
    registry = write_mask_token_dataset(tmp_path / "data", n=4)
    proc = subprocess.run(["bash", str(REPO / "recipes" / "sft_qwen25vl_3b.sh")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=offline_env(NNODES="2", DATASETS="masks", DRY_RUN="1",
                                          SVP_DATASET_REGISTRY=str(registry)))
    assert proc.returncode == 2 and "NNODES=2 needs NODE_RANK" in proc.stderr


def test_resumed_full_checkpoint_loads_under_the_models_key_names(tiny_model, tmp_path):
    """A full checkpoint as the trainer saves it (transformers 5 writes the legacy layout,
    ``model.layers.N``, ``visual.*``) loads back into every parameter by its own name."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from svp.common.swift_trainer import checkpoint_state_dict

    path = tiny_model("qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["model_type"] == "qwen2_5_vl"
    fresh = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    naive = fresh.load_state_dict(load_file(str(tmp_path / "ckpt" / "model.safetensors")),
                                  strict=False)
    assert naive.missing_keys, "the checkpoint is not in the legacy layout any more"
    state = checkpoint_state_dict(tmp_path / "ckpt", fresh)
    result = fresh.load_state_dict(state, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("visible", "gpus", "asked"), [
    (None, "8", True),   # a driver tool present: torch counts the GPUs
    (None, "0", True),   # a driver but no usable GPU: CPU arguments
    ("", "8", False),    # CUDA_VISIBLE_DEVICES="" hides every GPU: torch is not even asked
    ("-1", "8", False),
])
def test_launch_picks_cpu_arguments_only_without_a_gpu(tmp_path, visible, gpus, asked):
    """svp_launch asks torch for the GPU count only where a GPU could be (its import costs
    seconds on every recipe start), and says what it chose."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    fake_python = bin_dir / "python"
    fake_python.write_text(f"#!/bin/sh\necho asked >> {tmp_path / 'asked'}\necho {gpus}\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = offline_env(PATH=f"{bin_dir}:/usr/bin:/bin", SVP_PYTHON=str(fake_python),
                      NPROC_PER_NODE="2")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    script = (f"source {REPO / 'recipes' / 'common.sh'}; svp_launch; "
              'echo "ARGS=${DEVICE_ARGS[*]}"')
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert (tmp_path / "asked").exists() == asked
    if asked and gpus == "8":
        assert "ARGS=\n" in out and "no GPU visible" not in out
    else:
        assert "ARGS=--use_cpu true --fp16 false --ddp_backend gloo" in out
        assert "no GPU visible: training on CPU processes" in out


def test_the_process_group_is_destroyed_at_exit(tmp_path):
    """register() (twice, as two entries do) leaves one atexit handler that destroys an
    initialised group while the interpreter is whole: a gloo group left to finalisation
    aborted finished ranks (SIGABRT) now and then in the two-process runs."""
    script = tmp_path / "run.py"
    script.write_text(
        "import torch.distributed as dist\n"
        "from svp.common import swift_trainer\n"
        "swift_trainer.register()\n"
        "swift_trainer.register()\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0,"
        " world_size=1)\n"
        "original = dist.destroy_process_group\n"
        "def spy(*a, **k):\n"
        "    print('destroyed', flush=True)\n"
        "    return original(*a, **k)\n"
        "dist.destroy_process_group = spy\n"
        "print('exiting', flush=True)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=offline_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["exiting", "destroyed"]
