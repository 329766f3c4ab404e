"""Step time of mask-token SFT with the mask-span loss weighting vs the plain loss, same run.

Two real ``swift sft`` runs per round, alternating, on the same mask-token data, model, seed
and batch: ``--loss_scale default`` (ms-swift's binary path: labels go into the model) and
``--loss_scale default+mask_span`` (weighted: ms-swift scores the logits itself). The figure
is the median over the rounds of the per-round ratio, each run's time per step being the mean
of its steps after the first (the trainer's running average in its log).

The default model is the tiny Qwen2.5-VL, which keeps Qwen's full 151k-row vocabulary: the
logits, which are what the weighting used to cost, are at real size even there.

``--arch qwen2_5_vl_3b|qwen2_5_vl_7b|qwen3_vl_4b|qwen3_vl_8b`` runs the same on a random-weight
bf16 model of that real architecture (built once, cached; a GPU machine's figure).

    python bench/bench_mask_span_loss.py [--steps 30] [--rounds 3] [--batch 4] [--arch A]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(swift: str, model: str, family: str, registry: Path, loss_scale: str, out: Path,
            steps: int, batch: int) -> float:
    from svp.common.run_log import seconds_per_step

    cmd = [swift, "sft", "--model", model, "--model_type", family, "--template",
           family, "--external_plugins", str(REPO / "plugins" / "dataset_registry.py"),
           str(REPO / "plugins" / "masktok.py"), "--dataset", "masks", "--loss_scale",
           loss_scale, "--tuner_type", "lora", "--modules_to_save", "embed_tokens", "lm_head",
           "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
           "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
           "--dataloader_num_workers", "0", "--check_model", "false", "--seed", "1",
           "--output_dir", str(out)]
    import torch

    if not torch.cuda.is_available():  # bf16 (--arch) on a CPU machine needs it said
        cmd += ["--use_cpu", "true"]
    env = dict(os.environ, SVP_DATASET_REGISTRY=str(registry), HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"swift sft --loss_scale {loss_scale} failed:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds_per_step(next(out.glob("v0-*/logging.jsonl")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--arch", default="tiny",
                    choices=["tiny", "qwen2_5_vl_3b", "qwen2_5_vl_7b", "qwen3_vl_4b",
                             "qwen3_vl_8b"])
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    from svp.testing.synthetic import write_mask_token_dataset
    from svp.testing.tiny_model import cached_arch_model, cached_tiny_model

    family = "qwen3_vl" if args.arch.startswith("qwen3_vl") else "qwen2_5_vl"
    cache = REPO / ".cache" / "tiny_models"
    args.model = str(cached_tiny_model(family, cache) if args.arch == "tiny"
                     else cached_arch_model(args.arch, cache))
    swift = str(Path(sys.executable).parent / "swift")
    plain, span = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = write_mask_token_dataset(root / "data", n=16 * args.batch)
        for r in range(args.rounds):
            plain.append(one_run(swift, args.model, family, registry, "default",
                                 root / f"plain{r}", args.steps, args.batch))
            span.append(one_run(swift, args.model, family, registry, "default+mask_span",
                                root / f"span{r}", args.steps, args.batch))
            print(f"round {r + 1}: plain {plain[-1]:.3f} s/step, mask_span {span[-1]:.3f} "
                  f"s/step, ratio {span[-1] / plain[-1]:.3f}", flush=True)
    ratios = [s / p for s, p in zip(span, plain, strict=True)]
    figures = {"plain_s": statistics.median(plain), "span_s": statistics.median(span),
               "ratio": statistics.median(ratios), "ratios": ratios,
               "arch": args.arch, "batch": args.batch, "steps": args.steps}
    print(f"median: plain {figures['plain_s']:.3f} s/step, mask_span {figures['span_s']:.3f} "
          f"s/step, ratio {figures['ratio']:.3f} (goal <= 1.10)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
