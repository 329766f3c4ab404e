#!/usr/bin/env python
"""The demo behind `make demo`: the whole product on a tiny offline model, on CPU, in minutes.

    python data_tools/demo.py --out demo_out                 # every stage, then the report
    python data_tools/demo.py --out demo_out --stage sft     # one stage again (needs earlier ones)
    python data_tools/demo.py --list
    python data_tools/demo.py --out demo_out --export docs/demo   # publish report + pictures

All four capabilities, each through the recipe or tool a user runs on GPUs:
- registry: synthetic LLaVA data + registry, check_data, `swift sft` (LoRA) on ``shapes%50``
  via recipes/sft_registry.sh, `swift infer`;
- mask tokens: train the builtin mask codec, synthetic gRefCOCO -> tokenize_gres, mask-token
  SFT via recipes/sft_qwen25vl_3b.sh, `swift infer` and eval_gres under our protocol
  (constrained decoding) and SAMTok's (unconstrained, empty decoded mask = no target);
- crop tool + R-GRPO: synthetic VLM-R3 data -> convert_vlmr3 / convert_rl, crop SFT and
  merge via recipes/vlmr3_qwen25vl_7b.sh, crop_infer executing the crops, then a few R-GRPO
  steps with crop rollouts and the six rewards (same recipe, grpo stage);
- CoVT: a few steps of recipes/covt_qwen25vl_7b.sh with stand-in experts through three
  stages, then covt_decode on the merged model;
then data_tools/visualize.py (mask overlays, crop chains, visual-thought maps) and
``report.md`` (commands, wall times, loss / reward / aux-loss curves, metrics, pictures).
Each stage prints what it runs and the training steps as they are logged; its full output
is in ``logs/``; ``--stage NAME`` reruns one stage from the earlier stages' records.
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

from svp.common.checkpoints import newest_checkpoint
from svp.common.io import write_atomic
from svp.testing.synthetic import write_llava_dataset, write_registry
from svp.testing.tiny_model import cached_tiny_model

REPO = Path(__file__).resolve().parents[1]

ARCH = "qwen2_5_vl"
SWIFT = str(Path(sys.executable).parent / "swift")
# Lines of a swift run worth echoing to the console (the full output goes to the stage log).
_ECHO = re.compile(r"\{'loss'|\{'train_runtime'|rows from|rows ->|^\w*Error|^Traceback|"
                   r"last_model_checkpoint|saved to result_path|bad rows|^\[vlmr3\]|"
                   r"^\[covt\]|^crops \d|zero tokens|^wrote |written")


def _quote(arg: str) -> str:
    """Shell quoting that keeps a shown command on one line (newlines as bash ``$'\\n'``)."""
    if "\n" not in arg:
        return shlex.quote(arg)
    return "$'" + arg.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


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
        write_atomic(self.stages_dir / f"{rec.name}.json", json.dumps(rec.__dict__, indent=2))

    def run(self, rec: StageRecord, cmd: list[str], log_name: str,
            knobs: dict[str, str] | None = None) -> str:
        """Run a command (``knobs``: extra environment, shown in front of it), echo the
        interesting lines, keep the whole output in logs/."""
        knobs = knobs or {}
        shown = " ".join([*(f"{k}={_quote(v)}" for k, v in knobs.items()),
                          *(_quote(c) for c in cmd)])
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
    rec.commands.append(f"cached_tiny_model({ARCH!r}, '{cache.relative_to(REPO)}')  "
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
    rec.commands.append(f"write_llava_dataset(n={n}) + write_registry -> "
                        f"{reg.relative_to(demo.out)}")
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
    knobs = dict(
        MODEL=model, MODEL_TYPE=ARCH, DATASETS="shapes%50", OUTPUT_DIR=str(out_dir),
        TUNER="lora", LORA_RANK="16", LORA_ALPHA="32", LR="2e-3", MAX_STEPS=steps,
        SAVE_STEPS=steps, BATCH="4", GRAD_ACC="1", DTYPE="float32", NUM_WORKERS="0",
        EXTRA_ARGS="--check_model false --modules_to_save lm_head --logging_steps 2 "
                   "--add_version false")
    demo.run(rec, ["bash", str(REPO / "recipes" / "sft_registry.sh")], "sft.log", knobs)
    ckpt = newest_checkpoint(out_dir)
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
    from svp.testing.synthetic import write_synthetic_gres

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
    ckpt = newest_checkpoint(out_dir)
    rec.outputs.update(checkpoint=str(ckpt), logging=str(out_dir / "logging.jsonl"))


def stage_mask_eval(demo: Demo, rec: StageRecord) -> None:
    data = demo.record("gres_data").outputs
    ckpt = demo.record("mask_sft").outputs["checkpoint"]
    codec = demo.record("codec").outputs["codec"]
    result = demo.out / "mask_eval" / "gres_val_pred.jsonl"
    shutil.rmtree(result.parent, ignore_errors=True)
    result.parent.mkdir(parents=True)
    # ours: constrained decoding, "no target" = no mask tokens; SAMTok's protocol:
    # unconstrained generation, its fixed prompt (tokenize_gres writes it for val), "no
    # target" = an empty decoded mask
    for protocol, constrain in (("tokens", "1"), ("samtok", "0")):
        pred = result.with_name(f"gres_val_pred_{protocol}.jsonl")
        demo.run(rec, [SWIFT, "infer", "--adapters", ckpt, "--val_dataset", "gres_val",
                       "--max_new_tokens", "64", "--max_batch_size", "4",
                       "--result_path", str(pred)], f"mask_infer_{protocol}.log",
                 {"SVP_DATASET_REGISTRY": data["registry"], "SVP_CONSTRAIN_MASKS": constrain})
        name = "results.json" if protocol == "tokens" else f"results_{protocol}.json"
        out = demo.run(rec, [sys.executable, str(REPO / "data_tools" / "eval_gres.py"),
                             "--pred", str(pred), "--gt", data["val"], "--image-root",
                             data["images"], "--codec", f"builtin:{codec}", "--protocol",
                             protocol, "--out", str(result.parent / name)],
                       f"eval_gres_{protocol}.log")
        print("    " + out.strip().replace("\n", "\n    "))
    rec.outputs["results_samtok"] = str(result.parent / "results_samtok.json")
    rec.outputs["results"] = str(result.parent / "results.json")


# Crop-tool reasoning + Regional GRPO: CPU-sized images (the recipes' 448 would be slow here);
# SFT, inference and R-GRPO must agree on them, as the recipes check.
CROP_SIZES = {"SVP_CROP_MAIN_SHORT": "112", "SVP_CROP_MAX_SHORT": "112"}


def stage_crop_data(demo: Demo, rec: StageRecord) -> None:
    from svp.testing.synthetic import write_crop_questions

    src = demo.out / "crop_src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(demo.out / "crop", ignore_errors=True)
    n = 8 if demo.smoke else 32
    paths = write_crop_questions(src, n=n, seed=4)
    held = write_crop_questions(src / "heldout", n=2 if demo.smoke else 4, seed=5)
    rec.commands.append(f"write_crop_questions(n={n}) -> crop_src/ (VLM-R3 formats: vlir.jsonl "
                        "with {Crop ...} reasoning, rl.jsonl with answer + bbox)")
    crop = demo.out / "crop"
    demo.run(rec, [sys.executable, str(REPO / "data_tools" / "convert_vlmr3.py"),
                   "--input", str(paths["vlir"]), "--image_base_path", str(paths["images"]),
                   "--output", str(crop / "crop_sft.jsonl"), "--family", ARCH,
                   "--main-short", CROP_SIZES["SVP_CROP_MAIN_SHORT"],
                   "--crop-max-short", CROP_SIZES["SVP_CROP_MAX_SHORT"]], "convert_vlmr3.log")
    demo.run(rec, [sys.executable, str(REPO / "data_tools" / "convert_rl.py"),
                   "--input", str(paths["rl"]), "--image_base_path", str(paths["images"]),
                   "--output", str(crop / "rgrpo.jsonl")], "convert_rl.log")
    batch = crop / "heldout.jsonl"
    rows = [json.loads(x) for x in held["rl"].read_text().splitlines()]
    batch.write_text("".join(json.dumps({"image": str(held["images"] / r["image_path"]),
                                         "question": r["question"], "answer": r["answer"],
                                         "bbox": r["bbox"]}) + "\n" for r in rows))
    first = json.loads((crop / "crop_sft.jsonl").read_text().splitlines()[0])
    rec.outputs.update(sft=str(crop / "crop_sft.jsonl"), rl=str(crop / "rgrpo.jsonl"),
                       heldout=str(batch), example=first["messages"][1]["content"])
    print(f"  {n} crop SFT rows, {n} R-GRPO rows, {len(rows)} held-out questions")


def _vlmr3(demo: Demo, rec: StageRecord, stages: str, log: str, **knobs: str) -> None:
    """recipes/vlmr3_qwen25vl_7b.sh (the chain users run) with CPU-sized settings."""
    data = demo.record("crop_data").outputs
    base = dict(
        BASE_MODEL=demo.record("tiny_model").outputs["model"], MODEL_TYPE=ARCH,
        SFT_DATA=data["sft"], RL_DATA=data["rl"], WORK_DIR=str(demo.out / "vlmr3"),
        STAGES=stages, **CROP_SIZES)
    demo.run(rec, ["bash", str(REPO / "recipes" / "vlmr3_qwen25vl_7b.sh")], log,
             {**base, **knobs})


def stage_crop_sft(demo: Demo, rec: StageRecord) -> None:
    work = demo.out / "vlmr3"
    for sub in (work / "sft", work / "sft_merged"):  # full tuning: sft_merged is a link
        sub.unlink() if sub.is_symlink() else shutil.rmtree(sub, ignore_errors=True)
    steps = "4" if demo.smoke else "80"
    rec.notes.append(f"full tuning, {steps} steps: enough for a random tiny model to learn the "
                     "call format; the 7B recipe's default is LoRA + merge")
    _vlmr3(demo, rec, "sft merge", "crop_sft.log",
           SFT_TUNER="full", SFT_LR="5e-3", SFT_MAX_STEPS=steps, SFT_SAVE_STEPS=steps,
           SFT_BATCH="4", SFT_GRAD_ACC="1", SFT_WARMUP="0", SFT_NUM_WORKERS="0",
           SFT_GRAD_CKPT="false", SFT_DTYPE="float32",
           SFT_EXTRA_ARGS="--lr_scheduler_type constant --check_model false "
                          "--save_only_model true --logging_steps 2")
    run = next((work / "sft").glob("v*"))
    rec.outputs.update(model=str(work / "sft_merged"),
                       logging=str(run / "logging.jsonl"))


def stage_crop_infer(demo: Demo, rec: StageRecord) -> None:
    model = demo.record("crop_sft").outputs["model"]
    heldout = demo.record("crop_data").outputs["heldout"]
    out = demo.out / "crop_infer" / "results.json"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    prefix = []
    if demo.smoke:  # 4 SFT steps teach nothing; a prefilled call still runs the crop path
        prefix = ["--assistant_prefix",
                  "<think>\nLook closer. <tool_call>[0, 0, 70, 56]</tool_call>"]
        rec.notes.append("smoke setting: the answer is prefilled with one tool call")
    demo.run(rec, [sys.executable, str(REPO / "data_tools" / "crop_infer.py"),
                   "--model_path", model, "--model_type", ARCH, "--batch_file", heldout,
                   "--max_new_tokens", "48", "--max_crops", "2", "--temperature", "0",
                   *prefix, "--output_json", str(out)], "crop_infer.log", dict(CROP_SIZES))
    rec.outputs["results"] = str(out)


def stage_rgrpo(demo: Demo, rec: StageRecord) -> None:
    shutil.rmtree(demo.out / "vlmr3" / "rgrpo", ignore_errors=True)
    steps = "1" if demo.smoke else "6"
    rec.notes.append("one process without DeepSpeed (DEEPSPEED=''): on one CPU process "
                     "ZeRO-3, the recipe's default for GPUs, only adds start-up time")
    _vlmr3(demo, rec, "grpo", "rgrpo.log", DEEPSPEED="",
           RL_NUM_GENERATIONS="4", RL_BATCH="4", RL_GRAD_ACC="1", RL_MAX_STEPS=steps,
           RL_MAX_TURNS="3", RL_MAX_COMPLETION_LENGTH="40", RL_LR="1e-5",
           RL_TEMPERATURE="1.0", RL_DTYPE="float32", RL_NUM_WORKERS="0",
           RL_GRAD_CKPT="false",
           RL_EXTRA_ARGS="--check_model false --save_strategy no --logging_steps 1")
    run = next((demo.out / "vlmr3" / "rgrpo").glob("v*"))
    rec.outputs.update(logging=str(run / "logging.jsonl"),
                       completions=str(run / "completions.jsonl"))


COVT_KNOBS = {"SVP_COVT_BACKEND": "standin", "SVP_COVT_EXPERTS": "sam,depth"}


def stage_covt(demo: Demo, rec: StageRecord) -> None:
    from svp.testing.synthetic import write_messages_dataset

    work = demo.out / "covt"
    shutil.rmtree(work, ignore_errors=True)
    n = 8 if demo.smoke else 16
    data = write_messages_dataset(work / "data", n, seed=6)
    rec.commands.append(f"write_messages_dataset(n={n}) -> covt/data/train.jsonl")
    steps = 3 if demo.smoke else 30
    runs = f"understanding@0,generation@{steps // 3},reasoning@{2 * steps // 3}:{steps}"
    rec.notes.append("stand-in experts (random frozen networks with the real experts' "
                     "interfaces): no SAM / Depth Anything weights offline")
    demo.run(rec, ["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")], "covt.log", {
        **COVT_KNOBS, "BASE_MODEL": demo.record("tiny_model").outputs["model"],
        "DATA": str(data), "WORK_DIR": str(work), "RUNS": runs, "LR": "1e-3", "BATCH": "2",
        "SAVE_STEPS": str(steps), "NUM_WORKERS": "0", "GRAD_CKPT": "false",
        "DTYPE": "float32", "MAX_PIXELS": "50176",
        "EXTRA_ARGS": "--check_model false --logging_steps 1"})
    name = f"run1_{runs.split('@')[0]}"
    run = next((work / name).glob("v*"))
    rec.outputs.update(model=str(work / f"{name}_merged"), logging=str(run / "logging.jsonl"),
                       data=str(data))


def stage_covt_decode(demo: Demo, rec: StageRecord) -> None:
    from svp.covt.tokens import ThoughtConfig, build_turn

    covt = demo.record("covt").outputs
    row = json.loads(Path(covt["data"]).read_text().splitlines()[0])
    question = row["messages"][0]["content"]
    _, answer = build_turn("reasoning", question, row["messages"][1]["content"],
                           ThoughtConfig.parse(COVT_KNOBS["SVP_COVT_EXPERTS"]))
    out = demo.out / "covt_decode"
    shutil.rmtree(out, ignore_errors=True)
    demo.run(rec, [sys.executable, str(REPO / "data_tools" / "covt_decode.py"), "--model",
                   covt["model"], "--image", row["images"][0], "--question", question,
                   "--answer", answer, "--out", str(out)], "covt_decode.log", dict(COVT_KNOBS))
    rec.outputs["decoded"] = str(out / "decoded.json")


def stage_neo(demo: Demo, rec: StageRecord) -> None:
    """NEO from a tiny Qwen3: build_neo, PT (the explicit PT set) and SFT through the stage
    recipes, then swift infer on held-out questions."""
    from svp.testing.synthetic import write_messages_dataset
    from svp.testing.tiny_model import cached_tiny_model

    work = demo.out / "neo"
    shutil.rmtree(work, ignore_errors=True)
    cache = REPO / ".cache" / "tiny_models"
    rec.commands.append(f"cached_tiny_model('qwen3', '{cache.relative_to(REPO)}')  "
                        "# = python data_tools/make_tiny_model.py --arch qwen3 --out DIR")
    qwen3 = cached_tiny_model("qwen3", cache)
    init = work / "neo-init"
    demo.run(rec, [sys.executable, str(REPO / "data_tools" / "build_neo.py"), "--llm",
                   str(qwen3), "--extra-layers", "2", "--out", str(init),
                   "--vision-hidden", "64"], "neo_build.log")
    n = 12 if demo.smoke else 48
    data = write_messages_dataset(work / "data", n, seed=7, text_only=(3, 7))
    rec.commands.append(f"write_messages_dataset(n={n}) -> neo/data/train.jsonl")
    steps = "4" if demo.smoke else "30"
    common = dict(DATASETS=str(data), MAX_STEPS=steps, SAVE_STEPS=steps, BATCH="4",
                  GRAD_ACC="1", DTYPE="float32", NUM_WORKERS="0", WARMUP_STEPS="0",
                  LOGGING_STEPS="1", MIN_PIXELS=str(64 * 64), MAX_PIXELS=str(128 * 128),
                  SVP_DATASET_REGISTRY="",
                  EXTRA_ARGS="--check_model false --split_dataset_ratio 0 --add_version false")
    demo.run(rec, ["bash", str(REPO / "recipes" / "neo_2b_pt.sh")], "neo_pt.log",
             dict(common, MODEL=str(init), OUTPUT_DIR=str(work / "pt"), LR="2e-3"))
    pt = newest_checkpoint(work / "pt")
    demo.run(rec, ["bash", str(REPO / "recipes" / "neo_2b_sft.sh")], "neo_sft.log",
             dict(common, MODEL=str(pt), OUTPUT_DIR=str(work / "sft"), LR="1e-3"))
    sft = newest_checkpoint(work / "sft")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    val = work / "val.jsonl"
    val.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "messages"}
                                      | {"messages": r["messages"][:1]}) + "\n"
                           for r in rows[:4]))
    result = work / "infer.jsonl"
    demo.run(rec, [SWIFT, "infer", "--external_plugins", str(REPO / "plugins" / "neo.py"),
                   "--model", str(sft), "--model_type", "neo", "--val_dataset", str(val),
                   "--max_new_tokens", "12", "--max_batch_size", "4", "--torch_dtype",
                   "float32", "--result_path", str(result)], "neo_infer.log",
             {"SVP_NEO_MAX_PIXELS": str(128 * 128), "SVP_NEO_MIN_PIXELS": str(64 * 64)})
    rec.outputs.update(pt_logging=str(work / "pt" / "logging.jsonl"),
                       sft_logging=str(work / "sft" / "logging.jsonl"), result=str(result),
                       val=str(val))


def stage_visualize(demo: Demo, rec: StageRecord) -> None:
    """data_tools/visualize.py on the three kinds of output: masks, crop chains, thoughts."""
    tool = [sys.executable, str(REPO / "data_tools" / "visualize.py")]
    vis = demo.out / "vis"
    shutil.rmtree(vis, ignore_errors=True)
    gres = demo.record("gres_data").outputs
    demo.run(rec, [*tool, "masks", "--results", demo.record("mask_eval").outputs["results"],
                   "--gt", gres["val"], "--image-root", gres["images"], "--out",
                   str(vis / "masks"), "--max", "8"], "visualize_masks.log")
    crop = demo.record("crop_infer").outputs["results"]
    demo.run(rec, [*tool, "crops", "--results", crop, "--batch_file",
                   demo.record("crop_data").outputs["heldout"], "--out", str(vis / "crops")],
             "visualize_crops.log")
    demo.run(rec, [*tool, "thoughts", "--decoded", demo.record("covt_decode").outputs["decoded"],
                   "--out", str(vis / "thoughts.png")], "visualize_thoughts.log")
    rec.outputs.update(masks=str(vis / "masks" / "sheet.png"),
                       crops=str(vis / "crops" / "sheet.png"), thoughts=str(vis / "thoughts.png"))


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
    Stage("mask_eval", "swift infer + eval_gres, our protocol and SAMTok's", stage_mask_eval),
    Stage("crop_data", "Synthetic VLM-R3 data -> crop SFT rows + R-GRPO rows", stage_crop_data),
    Stage("crop_sft", "Crop-tool SFT via recipes/vlmr3_qwen25vl_7b.sh (sft, merge)",
          stage_crop_sft),
    Stage("crop_infer", "Inference that executes the crops (data_tools/crop_infer.py)",
          stage_crop_infer),
    Stage("rgrpo", "Regional GRPO with crop rollouts via recipes/vlmr3_qwen25vl_7b.sh (grpo)",
          stage_rgrpo),
    Stage("covt", "CoVT with stand-in experts via recipes/covt_qwen25vl_7b.sh", stage_covt),
    Stage("covt_decode", "Decode the visual-thought tokens (data_tools/covt_decode.py)",
          stage_covt_decode),
    Stage("neo", "NEO: build_neo from a tiny Qwen3, PT and SFT via recipes/neo_2b_*.sh, "
          "swift infer", stage_neo),
    Stage("visualize", "Pictures: masks, crop chains, visual thoughts (data_tools/visualize.py)",
          stage_visualize),
    Stage("report", "Write report.md", stage_report),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out", type=Path)
    ap.add_argument("--stage", action="append", choices=[s.name for s in STAGES],
                    help="run only these stages (repeatable); default: all")
    ap.add_argument("--smoke", action="store_true", help="smallest setting (used by tests)")
    ap.add_argument("--list", action="store_true", help="list the stages and exit")
    ap.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="copy the finished report and its pictures to DIR, then exit")
    args = ap.parse_args(argv)
    if args.list:
        for s in STAGES:
            print(f"{s.name:<12} {s.title}")
        return 0
    if args.export:
        from data_tools.demo_report import export_report

        print(f"exported {export_report(args.out, args.export)}")
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
