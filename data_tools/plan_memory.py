"""Per-GPU memory plan of a recipe at its defaults, or of any settings, on the real
architecture built on the meta device (svp/common/memory_plan.py has the method).

    python data_tools/plan_memory.py --recipe rgrpo_qwen25vl_7b            # 8 x 80 GB
    python data_tools/plan_memory.py --recipe sft_qwen3vl_4b --gpus 4 --gpu-mem 48
    python data_tools/plan_memory.py --all                                  # every recipe
    python data_tools/plan_memory.py --model Qwen/Qwen2.5-VL-7B-Instruct --tuner full \\
        --zero 3 --batch 2 --seq 8192

The recipes call it with their own values before they start (``RECIPES`` below holds their
defaults; a test holds the two equal). Exit status 0 when the plan fits, 1 when it does not,
2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from svp.common.memory_plan import KNOWN_MODELS, RunShape, format_plan, plan
from svp.neo.memory import register as register_neo_counts

register_neo_counts()  # NEO is our own model type: the planner learns to count it here

# Each recipe's defaults, as RunShape (8 x 80 GB unless told otherwise). recipes/*.sh pass
# the same values to --recipe when they print their plan; tests/common/test_memory_plan.py
# checks both agree and that every default fits.
RECIPES: dict[str, RunShape] = {
    "sft_registry": RunShape("qwen2_5_vl_7b", tuner="lora", lora_rank=64, batch=1,
                             seq_len=4096),
    "sft_qwen25vl_3b": RunShape("qwen2_5_vl_3b", tuner="lora", lora_rank=128, batch=4,
                                seq_len=8192, modules_to_save=("embed_tokens", "lm_head")),
    "sft_qwen3vl_4b": RunShape("qwen3_vl_4b", tuner="lora", lora_rank=128, batch=4,
                               seq_len=8192, modules_to_save=("embed_tokens", "lm_head")),
    "sft_crop_qwen25vl_7b": RunShape("qwen2_5_vl_7b", tuner="lora", lora_rank=64, batch=4,
                                     seq_len=4096),
    "sft_crop_qwen3vl_8b": RunShape("qwen3_vl_8b", tuner="lora", lora_rank=64, batch=4,
                                    seq_len=4096),
    "rgrpo_qwen25vl_7b": RunShape("qwen2_5_vl_7b", tuner="full", zero=3, batch=1,
                                  seq_len=8192, rollout_batch=1),
    # the new tokens' rows (TRAIN_NEW_ROWS=1, lora_new_rows) are a few rows: not counted
    "covt_qwen25vl_7b": RunShape("qwen2_5_vl_7b", tuner="lora", lora_rank=16, batch=1,
                                 seq_len=4096, modules_to_save=("covt_heads",)),
    # NEO: one packed row per device (its length is what memory depends on); the stage
    # settings are upstream's (its VLMTrainKit/scripts/*.sh), the patch embedding trains in
    # every stage
    "neo_2b_pt": RunShape("neo_2b", tuner="full", zero=2, batch=1, seq_len=16384,
                          freeze_vit=False, partial="PT set"),
    "neo_2b_mt": RunShape("neo_2b", tuner="full", zero=3, batch=1, seq_len=32768,
                          freeze_vit=False),
    "neo_2b_sft": RunShape("neo_2b", tuner="full", zero=3, batch=1, seq_len=34816,
                           freeze_vit=False),
    "neo_9b_pt": RunShape("neo_9b", tuner="full", zero=2, batch=1, seq_len=16384,
                          freeze_vit=False, partial="PT set"),
    "neo_9b_mt": RunShape("neo_9b", tuner="full", zero=3, batch=1, seq_len=18432,
                          freeze_vit=False),
    "neo_9b_sft": RunShape("neo_9b", tuner="full", zero=3, batch=1, seq_len=18432,
                           freeze_vit=False),
}
# CoVT's frozen experts per GPU in fp32 (published parameter counts x 4 B) plus an allowance
# for their activations on one batch (SAM's automatic mask generator is the largest).
EXPERT_GB = {"sam": 2.4 + 2.0, "depth": 1.3 + 0.5, "dino": 1.2 + 0.5, "pidinet": 0.0 + 0.5,
             "siglip": 1.2 + 0.3, "metaclip": 2.4 + 0.5}


def covt_extras(shape: RunShape) -> RunShape:
    """CoVT's heads (trainable, sized for the model) and experts (per GPU)."""
    from svp.common.memory_plan import count
    from svp.covt import settings
    from svp.covt.heads import CovtHeads
    from svp.covt.real import real_head_shapes

    config = settings.load()
    hidden = count(shape.arch).hidden
    heads = CovtHeads(hidden, real_head_shapes(config.thought, {}))
    n_heads = sum(p.numel() for p in heads.parameters())
    experts = sum(EXPERT_GB[n] for n in config.thought.experts)
    return replace(shape, extra_trainable=n_heads, extra_gb=experts,
                   extra_label=f"experts ({','.join(config.thought.experts)})")


def with_plugins(shape: RunShape) -> RunShape:
    """What a plugin adds beyond the model: CoVT's heads and experts."""
    return covt_extras(shape) if "covt_heads" in shape.modules_to_save else shape


def recipe_plan(name: str):
    """The plan of a recipe at its defaults (8 x 80 GB), plugins included."""
    return plan(with_plugins(RECIPES[name]))


def markdown_table() -> str:
    """Every recipe's plan at its defaults, one row each (the README's table)."""
    rows = ["| recipe | model | tuning | mode (8 x 80 GB) | micro-batch x tokens | weights | "
            "gradients + optimizer | activations + logits | other | total per GPU |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(RECIPES):
        p = recipe_plan(name)
        s, g = p.shape, p.parts
        tuning = s.tuner + (f" r{s.lora_rank}" if s.tuner == "lora" else "") + (
            f" + {', '.join(s.modules_to_save)}" if s.modules_to_save else "") + (
            f" ({s.partial})" if s.partial else "")
        mode = {0: "DDP", 2: "ZeRO-2", 3: "ZeRO-3"}[s.zero]
        main = g["weights"] + g["gradients"] + g["optimizer"] + g["activations"] + g["logits"]
        rows.append(f"| `{name}` | {s.arch} | {tuning} | {mode} | {s.batch} x {s.seq_len} | "
                    f"{g['weights']:.1f} | {g['gradients'] + g['optimizer']:.1f} | "
                    f"{g['activations'] + g['logits']:.1f} | {p.total_gb - main:.1f} | "
                    f"**{p.total_gb:.1f} GB** |")
    return "\n".join(rows)


def local_gpu_gb() -> float | None:
    """Memory of this machine's first GPU in GB, when it has one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.get_device_properties(0).total_memory / 1024 ** 3)


def build_shape(args) -> RunShape:
    base = RECIPES[args.recipe] if args.recipe else RunShape(args.model or "qwen2_5_vl_7b")
    changes = {}
    if args.model:
        changes["arch"] = KNOWN_MODELS.get(args.model.lower(), args.model)
    for key in ("tuner", "lora_rank", "zero", "gpus", "batch", "seq_len", "rollout_batch",
                "vllm_fraction", "supervised_fraction"):
        value = getattr(args, key)
        if value is not None:
            changes[key] = value
    if args.gpu_mem is not None:
        changes["gpu_mem_gb"] = args.gpu_mem
    elif not args.recipe:
        changes["gpu_mem_gb"] = local_gpu_gb() or base.gpu_mem_gb
    if args.grad_ckpt is not None:
        changes["grad_ckpt"] = args.grad_ckpt.lower() in ("1", "true", "yes")
    if args.modules_to_save is not None:
        changes["modules_to_save"] = tuple(args.modules_to_save.split())
    return with_plugins(replace(base, **changes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", choices=sorted(RECIPES))
    ap.add_argument("--all", action="store_true", help="plan every recipe at its defaults")
    ap.add_argument("--markdown", action="store_true",
                    help="the table of every recipe at its defaults (README 'Scaling out')")
    ap.add_argument("--model", help="bundled config name, model id or folder with config.json")
    ap.add_argument("--tuner", choices=["lora", "full"])
    ap.add_argument("--lora-rank", dest="lora_rank", type=int)
    ap.add_argument("--modules-to-save", dest="modules_to_save",
                    help="space-separated, as --modules_to_save")
    ap.add_argument("--zero", type=int, choices=[0, 2, 3], help="0 = DDP")
    ap.add_argument("--gpus", type=int)
    ap.add_argument("--gpu-mem", dest="gpu_mem", type=float, help="GB per GPU")
    ap.add_argument("--batch", type=int, help="per-device micro-batch")
    ap.add_argument("--seq", dest="seq_len", type=int, help="tokens per sample (max_length)")
    ap.add_argument("--grad-ckpt", dest="grad_ckpt")
    ap.add_argument("--rollout-batch", dest="rollout_batch", type=int,
                    help="sequences generated at once through the trainer's model (GRPO)")
    ap.add_argument("--vllm-fraction", dest="vllm_fraction", type=float,
                    help="vLLM colocate share of each GPU")
    ap.add_argument("--supervised-fraction", dest="supervised_fraction", type=float)
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_table())
        return 0
    names = sorted(RECIPES) if args.all else [args.recipe]
    if names == [None] and not args.model:
        ap.error("give --recipe NAME, --all or --model")
    ok = True
    for name in names:
        args.recipe = name
        try:
            p = plan(build_shape(args))
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print((f"[{name}] " if name else "") + format_plan(p))
        ok = ok and p.fits
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
