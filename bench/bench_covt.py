"""Step time of CoVT training vs plain ``swift sft`` on the same data, with on-the-fly vs
cached expert targets. Four real ``swift sft`` runs of ``--steps`` steps each, same model,
data, seed and batch:

  stock      ms-swift's own qwen2_5_vl model type / template on the rows already staged (the
             same text; the thought tokens added by --new_special_tokens)
  covt-lm    covt_qwen2_5_vl, rows staged (thought tokens in the text), expert losses off
  covt-fly   + expert losses, targets computed in the training step
  covt-cache + expert losses, targets read from data_tools/cache_expert_targets.py's cache

Time per step is taken from the trainer's log between the first and the last logged step
(the first step carries start-up; the log has whole seconds, so use >= 20 steps).
Defaults run the tiny model with the stand-in experts on CPU;
``--model`` / ``--backend real`` (with the SVP_COVT_<EXPERT>_CKPT variables) measure a real
setting on a GPU machine.

    python bench/bench_covt.py [--steps 20] [--experts sam,depth] [--model DIR]
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
    from svp.common.run_log import step_rows

    steps = step_rows(next(out.glob("v0-*/logging.jsonl")))
    t = [float(r["elapsed_time"].rstrip("s")) if isinstance(r["elapsed_time"], str)
         else r["elapsed_time"] for r in steps]
    if len(t) < 3:
        raise RuntimeError(f"{out}: too few logged steps")
    return (t[-1] - t[0]) / (len(t) - 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--experts", default="sam,depth")
    ap.add_argument("--backend", default="standin", choices=["standin", "real"])
    ap.add_argument("--model", default=None, help="default: the tiny Qwen2.5-VL")
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    if args.model is None:
        from svp.testing.tiny_model import cached_tiny_model

        args.model = str(cached_tiny_model("qwen2_5_vl", REPO / ".cache" / "tiny_models"))
    swift = str(Path(sys.executable).parent / "swift")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, staged = make_data(root, 4 * args.batch, args.experts)
        from svp.covt.tokens import ThoughtConfig

        new_tokens = ThoughtConfig.parse(args.experts).new_tokens()
        env = dict(os.environ, SVP_COVT_BACKEND=args.backend, SVP_COVT_EXPERTS=args.experts,
                   SVP_COVT_SCHEDULE="reasoning", PYTHONPATH=str(REPO))
        t0 = time.time()
        subprocess.run([sys.executable, str(REPO / "data_tools" / "cache_expert_targets.py"),
                        "--dataset", str(data), "--cache", str(root / "cache"), "--experts",
                        args.experts, "--backend", args.backend], env=env, check=True,
                       capture_output=True)
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
                "covt-cache": (covt, {"SVP_COVT_CACHE": str(root / "cache")})}
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
          f"{args.batch}, {args.steps} steps, 448x336 images; cache built in {cache_s:.1f}s")
    print("| run | s/step | ratio vs stock |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {t / times['stock']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
