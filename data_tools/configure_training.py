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

Per-device batch from GPU memory (7-8B model, bf16, gradient checkpointing), gradient
accumulation keeping an effective batch of 32 per GPU: < 24 GB: 2 x 16; 24-47 GB: 8 x 4 (the
document's 32 GB example); 48-79 GB: 16 x 2; >= 80 GB: 16 x 2 for full tuning, 32 x 1 for
LoRA. Prints the settings and, with --show_command, the recipe command that runs them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass

RECIPES = {"qwen2_5_vl": "recipes/sft_crop_qwen25vl_7b.sh",
           "qwen3_vl": "recipes/sft_crop_qwen3vl_8b.sh"}
EFFECTIVE_BATCH = 32


@dataclass
class Plan:
    tuner: str
    lora_rank: int | None
    lr: str
    batch: int
    grad_acc: int
    notes: list[str]

    def env(self) -> dict[str, str]:
        env = {"TUNER": self.tuner, "LR": self.lr, "BATCH": str(self.batch),
               "GRAD_ACC": str(self.grad_acc)}
        if self.lora_rank:
            env |= {"LORA_RANK": str(self.lora_rank), "LORA_ALPHA": str(2 * self.lora_rank)}
        return env


def plan(dataset_size: int, gpu_memory: float) -> Plan:
    """The rules in the module docstring."""
    if dataset_size <= 0 or gpu_memory <= 0:
        raise ValueError("dataset_size and gpu_memory must be positive")
    notes = []
    big_gpu = gpu_memory >= 80
    if dataset_size < 10_000:
        tuner, rank, lr = "lora", 64, "2e-5"
    elif dataset_size < 50_000:
        tuner, rank, lr = "lora", 128, "2e-5"
    elif dataset_size <= 100_000:
        tuner, rank, lr = "lora", 256, "1e-5"
        notes.append("full fine-tuning at LR=5e-6 is the alternative if LoRA plateaus"
                     + ("" if big_gpu else " (needs >= 80 GB per GPU)"))
    elif big_gpu:
        tuner, rank, lr = "full", None, "5e-6"
    else:
        tuner, rank, lr = "lora", 256, "1e-5"
        notes.append(f"> 100k images favour full fine-tuning, but {gpu_memory:g} GB < 80 GB: "
                     "LoRA r256 instead (or full with DEEPSPEED=zero3 across GPUs)")
    if gpu_memory < 24:
        batch = 2
    elif gpu_memory < 48:
        batch = 8
    elif gpu_memory < 80 or tuner == "full":
        batch = 16
    else:
        batch = 32
    if gpu_memory < 24:
        notes.append("under 24 GB: keep gradient checkpointing on; consider MAX_PIXELS lower")
    return Plan(tuner, rank, lr, batch, max(1, EFFECTIVE_BATCH // batch), notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset_size", type=int, required=True, help="number of training images")
    ap.add_argument("--gpu_memory", type=float, required=True, help="GB per GPU")
    ap.add_argument("--model", choices=sorted(RECIPES), default="qwen2_5_vl")
    ap.add_argument("--data", default="data/crop_sft.jsonl")
    ap.add_argument("--show_command", action="store_true")
    args = ap.parse_args(argv)
    try:
        p = plan(args.dataset_size, args.gpu_memory)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank = f" r{p.lora_rank} (alpha {2 * p.lora_rank})" if p.lora_rank else ""
    print(f"{args.dataset_size} images, {args.gpu_memory:g} GB/GPU -> {p.tuner}{rank}, "
          f"lr {p.lr}, batch {p.batch} x grad-acc {p.grad_acc} per GPU")
    for n in p.notes:
        print(f"note: {n}")
    if args.show_command:
        env = {"DATA": args.data, **p.env()}
        knobs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        print(f"{knobs} bash {RECIPES[args.model]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
