#!/usr/bin/env python
"""LoRA or full fine-tuning for crop-tool SFT, from the dataset size and the GPU memory.

    python data_tools/configure_training.py --dataset_size 40000 --gpu_memory 32 --show_command

The guidance of the VLM-R3 training document this project unifies, as rules:

| images       | tuning                         | learning rate |
|--------------|--------------------------------|---------------|
| < 10k        | LoRA r64 (alpha 2r)            | 2e-5          |
| 10k - 50k    | LoRA r128                      | 2e-5          |
| 50k - 100k   | LoRA r256 (full at 5e-6 with >= 80 GB) | 1e-5  |
| > 100k       | full fine-tuning (needs >= 80 GB; else LoRA r256 at 1e-5) | 5e-6 |

The per-device batch is then sized by our memory planner (svp/common/memory_plan.py, the
one every recipe prints) for the recipe's model at MAX_LENGTH 4096 on --gpus GPUs: the
largest of 32, 16, 8, 4, 2, 1 that fits --gpu_memory, with gradient accumulation keeping an
effective batch of 32 per GPU. The document's table (8 x 4 at 32 GB) did not fit its own
example: the planner puts LoRA r128 at micro-batch 8 at 49 GB. LoRA stays on DDP unless
micro-batch 1 does not fit there (then ZeRO-3 shards the frozen weights); full tuning takes
the mode (DDP, ZeRO-2, ZeRO-3) that fits the largest micro-batch. Exit status 1 when nothing
fits. Prints the settings, the plan's total and, with --show_command, the recipe command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass

RECIPES = {"qwen2_5_vl": "recipes/sft_crop_qwen25vl_7b.sh",
           "qwen3_vl": "recipes/sft_crop_qwen3vl_8b.sh"}
ARCH = {"qwen2_5_vl": "qwen2_5_vl_7b", "qwen3_vl": "qwen3_vl_8b"}  # the recipes' models
SEQ_LEN = 4096  # sft_crop.sh's MAX_LENGTH
EFFECTIVE_BATCH = 32
BATCHES = (32, 16, 8, 4, 2, 1)


@dataclass
class Plan:
    tuner: str
    lora_rank: int | None
    lr: str
    batch: int
    grad_acc: int
    notes: list[str]
    zero: int = 0              # 0 DDP, 2 or 3: DEEPSPEED=zero2|zero3
    memory_gb: float = 0.0     # the planner's total per GPU
    fits: bool = True
    memory_text: str = ""      # the planner's breakdown, as the recipe will print it

    def env(self) -> dict[str, str]:
        env = {"TUNER": self.tuner, "LR": self.lr, "BATCH": str(self.batch),
               "GRAD_ACC": str(self.grad_acc)}
        if self.lora_rank:
            env |= {"LORA_RANK": str(self.lora_rank), "LORA_ALPHA": str(2 * self.lora_rank)}
        if self.zero:
            env["DEEPSPEED"] = f"zero{self.zero}"
        return env


def guidance(dataset_size: int, gpu_memory: float) -> tuple[str, int | None, str, list[str]]:
    """Tuning and learning rate from the document's table (module docstring)."""
    notes = []
    big_gpu = gpu_memory >= 80
    if dataset_size < 10_000:
        return "lora", 64, "2e-5", notes
    if dataset_size < 50_000:
        return "lora", 128, "2e-5", notes
    if dataset_size <= 100_000:
        notes.append("full fine-tuning at LR=5e-6 is the alternative if LoRA plateaus"
                     + ("" if big_gpu else " (needs >= 80 GB per GPU)"))
        return "lora", 256, "1e-5", notes
    if big_gpu:
        return "full", None, "5e-6", notes
    notes.append(f"> 100k images favour full fine-tuning, but {gpu_memory:g} GB < 80 GB: "
                 "LoRA r256 instead (or full with DEEPSPEED=zero3 across GPUs)")
    return "lora", 256, "1e-5", notes


def largest_fit(tuner: str, rank: int | None, zero: int, gpu_memory: float, gpus: int,
                model: str) -> tuple[int, str, float]:
    """(largest micro-batch of BATCHES that the planner fits, its printed plan, its total GB);
    batch 0 and the plan at micro-batch 1 when none fits."""
    from svp.common.memory_plan import RunShape, format_plan
    from svp.common.memory_plan import plan as memory_plan

    for batch in BATCHES:
        p = memory_plan(RunShape(ARCH[model], tuner=tuner, lora_rank=rank or 64, zero=zero,
                                 gpus=gpus, gpu_mem_gb=gpu_memory, batch=batch,
                                 seq_len=SEQ_LEN))
        if p.fits:
            return batch, format_plan(p), p.total_gb
    return 0, format_plan(p), p.total_gb


def plan(dataset_size: int, gpu_memory: float, model: str = "qwen2_5_vl",
         gpus: int = 8) -> Plan:
    """The document's tuning choice, with the micro-batch and mode our planner fits."""
    if dataset_size <= 0 or gpu_memory <= 0 or gpus <= 0:
        raise ValueError("dataset_size, gpu_memory and gpus must be positive")
    tuner, rank, lr, notes = guidance(dataset_size, gpu_memory)
    if tuner == "lora":  # DDP, or ZeRO-3 when not even micro-batch 1 fits there
        fitted = [(largest_fit(tuner, rank, 0, gpu_memory, gpus, model), 0)]
        if not fitted[0][0][0]:
            fitted = [(largest_fit(tuner, rank, 3, gpu_memory, gpus, model), 3)]
    else:
        fitted = [(largest_fit(tuner, rank, z, gpu_memory, gpus, model), z)
                  for z in ([0, 2, 3] if gpus > 1 else [0])]
    (batch, memory_text, total), zero = max(fitted, key=lambda f: (f[0][0], -f[1]))
    fits = batch > 0
    if not fits:
        notes.append(f"nothing fits {gpu_memory:g} GB per GPU even at micro-batch 1 "
                     f"({total:.1f} GB): more GPUs with DEEPSPEED=zero3, or a lower MAX_LENGTH")
        batch = 1
    if gpu_memory < 24:
        notes.append("under 24 GB: keep gradient checkpointing on; consider MAX_PIXELS lower")
    return Plan(tuner, rank, lr, batch, max(1, EFFECTIVE_BATCH // batch), notes, zero,
                round(total, 1), fits, memory_text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset_size", type=int, required=True, help="number of training images")
    ap.add_argument("--gpu_memory", type=float, required=True, help="GB per GPU")
    ap.add_argument("--model", choices=sorted(RECIPES), default="qwen2_5_vl")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs in the job (ZeRO shards over them)")
    ap.add_argument("--data", default="data/crop_sft.jsonl")
    ap.add_argument("--show_command", action="store_true")
    args = ap.parse_args(argv)
    try:
        p = plan(args.dataset_size, args.gpu_memory, args.model, args.gpus)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank = f" r{p.lora_rank} (alpha {2 * p.lora_rank})" if p.lora_rank else ""
    print(f"{args.dataset_size} images, {args.gpu_memory:g} GB/GPU -> {p.tuner}{rank}, "
          f"lr {p.lr}, batch {p.batch} x grad-acc {p.grad_acc} per GPU"
          + (f", DeepSpeed ZeRO-{p.zero}" if p.zero else ", DDP")
          + f"; memory plan {p.memory_gb:.1f} GB per GPU on {args.gpus} GPUs"
          + ("" if p.fits else " (DOES NOT FIT)"))
    for n in p.notes:
        print(f"note: {n}")
    print(p.memory_text)
    if args.show_command:
        env = {"DATA": args.data, "NPROC_PER_NODE": str(args.gpus), **p.env()}
        knobs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        print(f"{knobs} bash {RECIPES[args.model]}")
    return 0 if p.fits else 1


if __name__ == "__main__":
    sys.exit(main())
