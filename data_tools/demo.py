#!/usr/bin/env python
"""The demo behind `make demo`: the whole product on a tiny offline model, on CPU, in minutes.

    python data_tools/demo.py --out demo_out                 # every stage, then the report
    python data_tools/demo.py --out demo_out --stage sft     # one stage again (needs earlier ones)
    python data_tools/demo.py --list

Stages available now (the capability issues add theirs): build the tiny Qwen2.5-VL, write a
synthetic LLaVA dataset and its registry, check it, fine-tune with `swift sft` (LoRA) on
``shapes%50`` through the registry plugin, run `swift infer`; train the builtin mask codec,
turn synthetic gRefCOCO data into mask-token conversations, fine-tune on them, generate
with constrained decoding and score with the GRES metrics; then write ``report.md`` with
each stage's command and wall time, loss curves, metrics and pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plugins.core.synthetic import write_llava_dataset, write_registry  # noqa: E402
from plugins.core.tiny_model import cached_tiny_model  # noqa: E402

ARCH = "qwen2_5_vl"
SWIFT = str(Path(sys.executable).parent / "swift")
# Lines of a swift run worth echoing to the console (the full output goes to the stage log).
_ECHO = re.compile(r"\{'loss'|\{'train_runtime'|rows from|rows ->|^\w*Error|^Traceback|"
                   r"last_model_checkpoint|saved to result_path|bad rows")


@dataclass
class StageRecord:
    """What a stage ran and produced; written to ``stages/<name>.json`` for the report."""

    name: str
    title: str
    commands: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Demo:
    """Paths of one demo output folder and the helpers the stages share."""

    def __init__(self, out: Path, smoke: bool = False):
        self.out = out.resolve()
        self.smoke = smoke  # smallest setting, for the CI test of the demo
        self.stages_dir = self.out / "stages"
        self.logs = self.out / "logs"
        for d in (self.stages_dir, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1",
                        TOKENIZERS_PARALLELISM="false",
                        PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                        SVP_DATASET_REGISTRY=str(self.out / "data" / "datasets.yaml"),
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def record(self, name: str) -> StageRecord:
        """The saved record of an earlier stage; stops with a hint when it has not run."""
        path = self.stages_dir / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"stage {name!r} has not run yet in {self.out}; run it first "
                             f"(python data_tools/demo.py --out {self.out} --stage {name})")
        return StageRecord(**json.loads(path.read_text()))

    def save(self, rec: StageRecord) -> None:
        tmp = self.stages_dir / f".{rec.name}.json.tmp"
        tmp.write_text(json.dumps(rec.__dict__, indent=2))
        tmp.replace(self.stages_dir / f"{rec.name}.json")

    def run(self, rec: StageRecord, cmd: list[str], log_name: str,
            knobs: dict[str, str] | None = None) -> str:
        """Run a command (``knobs``: extra environment, shown in front of it), echo the
        interesting lines, keep the whole output in logs/."""
        knobs = knobs or {}
        shown = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in knobs.items()),
                          *(shlex.quote(c) for c in cmd)])
        shown = shown.replace(str(self.out) + "/", "").replace(str(REPO) + "/", "")
        rec.commands.append(shown)
        print(f"  $ {shown}", flush=True)
        log_path = self.logs / log_name
        lines = []
        with subprocess.Popen(cmd, cwd=self.out, env={**self.env, **knobs}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                for part in line.rstrip("\n").split("\r"):
                    if _ECHO.search(part):
                        print(f"    {part.strip()[:160]}", flush=True)
        output = "".join(lines)
        log_path.write_text(output)
        if proc.returncode != 0:
            tail = "".join(lines[-30:])
            raise SystemExit(f"stage {rec.name!r} failed (exit {proc.returncode}); "
                             f"full log: {log_path}\n{tail}")
        return output


# ------------------------------------------------------------------------------------------
# Stages


def stage_tiny_model(demo: Demo, rec: StageRecord) -> None:
    cache = REPO / ".cache" / "tiny_models"
    rec.commands.append(f"cached_tiny_model({ARCH!r}, {cache})  "
                        f"# = python data_tools/make_tiny_model.py --arch {ARCH} --out DIR")
    path = cached_tiny_model(ARCH, cache)
    rec.outputs["model"] = str(path)
    print(f"  tiny {ARCH} model: {path}")


def stage_data(demo: Demo, rec: StageRecord) -> None:
    data = demo.out / "data"
    n = 12 if demo.smoke else 48
    shapes = write_llava_dataset(data, n=n, seed=1, name="shapes")
    heldout = write_llava_dataset(data, n=8, seed=2, name="heldout")
    reg = write_registry(data / "datasets.yaml", {
        "shapes": (shapes.name, "images"), "heldout": (heldout.name, "images")})
    rec.commands.append(f"write_llava_dataset(n={n}) + write_registry -> {reg}")
    rec.outputs.update(registry=str(reg), train=str(shapes), heldout=str(heldout))
    print(f"  wrote {n} + 8 synthetic shape images and {reg}")


def stage_check_data(demo: Demo, rec: StageRecord) -> None:
    reg = demo.record("data").outputs["registry"]
    out = demo.run(rec, [sys.executable, str(REPO / "data_tools" / "check_data.py"),
                         "--registry", reg, "--dataset", "shapes%50", "heldout"],
                   "check_data.log")
    print("    " + out.strip().replace("\n", "\n    "))
    rec.outputs["table"] = out.strip()


def stage_sft(demo: Demo, rec: StageRecord) -> None:
    model = demo.record("tiny_model").outputs["model"]
    out_dir = demo.out / "sft"
    shutil.rmtree(out_dir, ignore_errors=True)  # ms-swift appends to logging.jsonl otherwise
    steps = "4" if demo.smoke else "40"
    rec.notes.append("through recipes/sft_registry.sh, the recipe users run on GPUs")
    knobs = dict(
        MODEL=model, MODEL_TYPE=ARCH, DATASETS="shapes%50", OUTPUT_DIR=str(out_dir),
        TUNER="lora", LORA_RANK="16", LORA_ALPHA="32", LR="2e-3", MAX_STEPS=steps,
        SAVE_STEPS=steps, BATCH="4", GRAD_ACC="1", DTYPE="float32", NUM_WORKERS="0",
        EXTRA_ARGS="--check_model false --modules_to_save lm_head --logging_steps 2 "
                   "--add_version false")
    demo.run(rec, ["bash", str(REPO / "recipes" / "sft_registry.sh")], "sft.log", knobs)
    ckpt = max(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    rec.outputs.update(checkpoint=str(ckpt), logging=str(out_dir / "logging.jsonl"))


def stage_infer(demo: Demo, rec: StageRecord) -> None:
    ckpt = demo.record("sft").outputs["checkpoint"]
    result = demo.out / "infer" / "heldout.jsonl"
    result.parent.mkdir(exist_ok=True)
    result.unlink(missing_ok=True)
    demo.run(rec, [
        SWIFT, "infer", "--adapters", ckpt, "--val_dataset", "heldout",
        "--max_new_tokens", "12", "--max_batch_size", "4", "--result_path", str(result),
    ], "infer.log")
    rec.outputs["result"] = str(result)


def stage_codec(demo: Demo, rec: StageRecord) -> None:
    out = demo.out / "codec"
    shutil.rmtree(out, ignore_errors=True)
    steps = "60" if demo.smoke else "800"
    demo.run(rec, [sys.executable, str(REPO / "data_tools" / "train_mask_codec.py"),
                   "--out", str(out), "--steps", steps, "--eval-masks", "100"],
             "train_mask_codec.log")
    metrics = json.loads((out / "metrics.json").read_text())
    rec.outputs.update(codec=str(out / "codec.pt"), mean_iou=f"{metrics['mean_iou']:.3f}",
                       median_iou=f"{metrics['median_iou']:.3f}", steps=steps)
    print(f"  held-out reconstruction IoU: mean {metrics['mean_iou']:.3f}")


def stage_gres_data(demo: Demo, rec: StageRecord) -> None:
    from plugins.core.synthetic import write_synthetic_gres

    src = demo.out / "gres_src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(demo.out / "gres", ignore_errors=True)
    paths = write_synthetic_gres(src, n_images=8 if demo.smoke else 24, seed=3)
    rec.commands.append("write_synthetic_gres -> gres_src/ (gRefCOCO format: grefs(unc).json, "
                        "instances.json, images/)")
    codec = demo.record("codec").outputs["codec"]
    for split in ("train", "val"):
        demo.run(rec, [sys.executable, str(REPO / "data_tools" / "tokenize_gres.py"),
                       "--grefs", str(paths["grefs"]), "--instances", str(paths["instances"]),
                       "--image-root", str(paths["images"]), "--split", split,
                       "--codec", f"builtin:{codec}", "--out", str(demo.out / "gres" / split)],
                 f"tokenize_gres_{split}.log")
    rec.outputs.update(images=str(paths["images"]),
                       registry=f"{demo.out / 'gres' / 'train' / 'datasets.yaml'}{os.pathsep}"
                                f"{demo.out / 'gres' / 'val' / 'datasets.yaml'}",
                       val=str(demo.out / "gres" / "val" / "gres_val.jsonl"))


def stage_mask_sft(demo: Demo, rec: StageRecord) -> None:
    model = demo.record("tiny_model").outputs["model"]
    data = demo.record("gres_data").outputs
    out_dir = demo.out / "mask_sft"
    shutil.rmtree(out_dir, ignore_errors=True)
    steps = "4" if demo.smoke else "200"
    knobs = dict(
        MODEL=model, SVP_DATASET_REGISTRY=data["registry"], DATASETS="gres_train",
        OUTPUT_DIR=str(out_dir), LR="3e-3", LORA_RANK="16", LORA_ALPHA="32",
        MAX_STEPS=steps, SAVE_STEPS=steps, BATCH="4", GRAD_ACC="1", DTYPE="float32",
        NUM_WORKERS="0", LOSS_SCALE="default",
        EXTRA_ARGS="--check_model false --logging_steps 4 --add_version false")
    demo.run(rec, ["bash", str(REPO / "recipes" / "sft_qwen25vl_3b.sh")], "mask_sft.log", knobs)
    ckpt = max(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    rec.outputs.update(checkpoint=str(ckpt), logging=str(out_dir / "logging.jsonl"))


def stage_mask_eval(demo: Demo, rec: StageRecord) -> None:
    data = demo.record("gres_data").outputs
    ckpt = demo.record("mask_sft").outputs["checkpoint"]
    codec = demo.record("codec").outputs["codec"]
    result = demo.out / "mask_eval" / "gres_val_pred.jsonl"
    shutil.rmtree(result.parent, ignore_errors=True)
    result.parent.mkdir(parents=True)
    demo.run(rec, [SWIFT, "infer", "--adapters", ckpt, "--val_dataset", "gres_val",
                   "--max_new_tokens", "64", "--max_batch_size", "4",
                   "--result_path", str(result)], "mask_infer.log",
             {"SVP_DATASET_REGISTRY": data["registry"]})
    out = demo.run(rec, [sys.executable, str(REPO / "data_tools" / "eval_gres.py"),
                         "--pred", str(result), "--gt", data["val"], "--image-root",
                         data["images"], "--codec", f"builtin:{codec}", "--out",
                         str(result.parent / "results.json"), "--overlays",
                         str(result.parent / "overlays"), "--max-overlays", "6"],
                   "eval_gres.log")
    print("    " + out.strip().replace("\n", "\n    "))
    rec.outputs.update(results=str(result.parent / "results.json"),
                       overlays=str(result.parent / "overlays"))


def stage_report(demo: Demo, rec: StageRecord) -> None:
    from data_tools.demo_report import write_report

    path = write_report(demo.out, [s.name for s in STAGES if s.name != "report"])
    rec.outputs["report"] = str(path)
    print(f"  report: {path}")


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    fn: Callable[[Demo, StageRecord], None]


STAGES = [
    Stage("tiny_model", "Build the tiny offline Qwen2.5-VL", stage_tiny_model),
    Stage("data", "Synthetic LLaVA data + dataset registry", stage_data),
    Stage("check_data", "Validate the registry datasets", stage_check_data),
    Stage("sft", "swift sft (LoRA) on shapes%50 via recipes/sft_registry.sh", stage_sft),
    Stage("infer", "swift infer on the held-out registry dataset", stage_infer),
    Stage("codec", "Train the builtin mask codec (2 x 256 residual VQ)", stage_codec),
    Stage("gres_data", "Synthetic gRefCOCO -> mask-token conversations", stage_gres_data),
    Stage("mask_sft", "Mask-token SFT via recipes/sft_qwen25vl_3b.sh", stage_mask_sft),
    Stage("mask_eval", "swift infer (constrained) + eval_gres", stage_mask_eval),
    Stage("report", "Write report.md", stage_report),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out", type=Path)
    ap.add_argument("--stage", action="append", choices=[s.name for s in STAGES],
                    help="run only these stages (repeatable); default: all")
    ap.add_argument("--smoke", action="store_true", help="smallest setting (used by tests)")
    ap.add_argument("--list", action="store_true", help="list the stages and exit")
    args = ap.parse_args(argv)
    if args.list:
        for s in STAGES:
            print(f"{s.name:<12} {s.title}")
        return 0
    demo = Demo(args.out, smoke=args.smoke)
    chosen = [s for s in STAGES if not args.stage or s.name in args.stage]
    t_all = time.time()
    for i, stage in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {stage.name}: {stage.title}", flush=True)
        rec = StageRecord(stage.name, stage.title)
        t0 = time.time()
        stage.fn(demo, rec)
        rec.wall_s = round(time.time() - t0, 1)
        demo.save(rec)
        print(f"  done in {rec.wall_s:.1f} s", flush=True)
    if chosen and chosen[-1].name != "report" and (demo.stages_dir / "report.json").exists():
        stage_report(demo, StageRecord("report", "Write report.md"))
    print(f"demo finished in {time.time() - t_all:.0f} s; report: {demo.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
