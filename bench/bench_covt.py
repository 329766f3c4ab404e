"""Step time of CoVT training vs plain ``swift sft`` on the same data, with on-the-fly vs
cached expert targets. Five real ``swift sft`` runs of ``--steps`` steps each, same model,
data, seed and batch:

  stock      ms-swift's own qwen2_5_vl model type / template on the rows already staged (the
             same text; the thought tokens added by --new_special_tokens)
  covt-lm    covt_qwen2_5_vl, rows staged (thought tokens in the text), expert losses off
  covt-fly   + expert losses, targets computed in the training step
  covt-cache + expert losses, a compact cache (data_tools/cache_expert_targets.py: SAM's
             masks read, the experts' forward passes rerun in the step)
  covt-full  + expert losses, a full cache (every target read, no expert in the step)

Time per step is the mean of the steps after the first (which carries start-up), from the
trainer's running average in its log.
Defaults run the tiny model with the stand-in experts on CPU;
``--model`` / ``--backend real`` (with the SVP_COVT_<EXPERT>_CKPT variables) measure a real
setting on a GPU machine.

    python bench/bench_covt.py [--steps 20] [--experts sam,depth] [--model DIR | --arch A]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_data(root: Path, n: int, experts: str) -> tuple[Path, Path]:
    """Raw LLaVA-style rows, and the same rows staged for the reasoning stage (the text the
    CoVT template trains on), so the stock run sees the very same token sequences."""
    from svp.covt.tokens import ThoughtConfig, build_turn
    from svp.testing.synthetic import write_messages_dataset

    raw = write_messages_dataset(root, n, 448, 336)
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    cfg = ThoughtConfig.parse(experts)
    staged = []
    for r in rows:
        q, a = (m["content"] for m in r["messages"])
        q = "<image>" + q.replace("<image>", "").lstrip("\n")
        u, b = build_turn("reasoning", q, a, cfg)
        staged.append(dict(r, messages=[{"role": "user", "content": u},
                                        {"role": "assistant", "content": b}]))
    pre = root / "staged.jsonl"
    pre.write_text("".join(json.dumps(r) + "\n" for r in staged))
    return raw, pre


def step_time(out: Path) -> float:
    from svp.common.run_log import seconds_per_step

    return seconds_per_step(next(out.glob("v0-*/logging.jsonl")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--experts", default="sam,depth")
    ap.add_argument("--backend", default="standin", choices=["standin", "real"])
    ap.add_argument("--model", default=None, help="default: the tiny Qwen2.5-VL")
    ap.add_argument("--arch", default="tiny", choices=["tiny", "qwen2_5_vl_3b", "qwen2_5_vl_7b"],
                    help="a random-weight bf16 model of this real architecture (not --model)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.model is None:
        from svp.testing.tiny_model import cached_arch_model, cached_tiny_model

        cache = REPO / ".cache" / "tiny_models"
        args.model = str(cached_tiny_model("qwen2_5_vl", cache) if args.arch == "tiny"
                         else cached_arch_model(args.arch, cache))
    swift = str(Path(sys.executable).parent / "swift")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, staged = make_data(root, 4 * args.batch, args.experts)
        from svp.covt.tokens import ThoughtConfig

        new_tokens = ThoughtConfig.parse(args.experts).new_tokens()
        env = dict(os.environ, SVP_COVT_BACKEND=args.backend, SVP_COVT_EXPERTS=args.experts,
                   SVP_COVT_SCHEDULE="reasoning", PYTHONPATH=str(REPO))
        t0 = time.time()
        for contents in ("compact", "full"):
            subprocess.run([sys.executable, str(REPO / "data_tools" / "cache_expert_targets.py"),
                            "--dataset", str(data), "--cache", str(root / contents),
                            "--experts", args.experts, "--backend", args.backend,
                            "--contents", contents], env=env, check=True, capture_output=True)
        cache_s = time.time() - t0
        common = ["--model", args.model, "--max_steps",
                  str(args.steps), "--tuner_type", "lora", "--learning_rate", "1e-4",
                  "--per_device_train_batch_size", str(args.batch), "--logging_steps", "1",
                  "--dataloader_num_workers", "0", "--save_strategy", "no", "--check_model",
                  "false", "--report_to", "none", "--seed", "1", "--max_pixels", "200704"]
        covt = ["--dataset", str(data), "--external_plugins", str(REPO / "plugins" / "covt.py"),
                "--model_type",
                "covt_qwen2_5_vl", "--template", "qwen2_5_vl_covt", "--modules_to_save",
                "covt_heads"]
        stock = ["--dataset", str(staged), "--model_type", "qwen2_5_vl", "--template",
                 "qwen2_5_vl", "--new_special_tokens", *new_tokens]
        runs = {"stock": (stock, {}),
                "covt-lm": (covt, {"SVP_COVT_AUX_UNTIL": "0"}),
                "covt-fly": (covt, {}),
                "covt-cache": (covt, {"SVP_COVT_CACHE": str(root / "compact")}),
                "covt-full": (covt, {"SVP_COVT_CACHE": str(root / "full")})}
        times = {}
        for name, (extra, more) in runs.items():
            out = root / name
            r = subprocess.run([swift, "sft", *common, *extra, "--output_dir", str(out)],
                               env=dict(env, **more), capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stdout[-3000:], r.stderr[-3000:])
                return 1
            times[name] = step_time(out)
    print(f"model {Path(args.model).name}, experts {args.experts} ({args.backend}), batch "
          f"{args.batch}, {args.steps} steps, 448x336 images; both caches built in {cache_s:.1f}s")
    print("| run | s/step | ratio vs stock |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {t / times['stock']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"s_per_step": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
