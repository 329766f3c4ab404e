"""Mask tokens end to end on the tiny Qwen2.5-VL: gRefCOCO-format data -> tokenize_gres
(builtin codec) -> swift sft (LoRA, new rows trained, mask-span weight) -> swift infer ->
eval_gres, on the real COCO fixture polygons with single-, multi- and no-target refs (the
synthetic scenes take the same path in ``make demo``: tests/test_demo.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers import (
    REPO,
    TEMPLATE_ARGS,
    TRAIN_ARGS,
    coco_fixture,
    last_checkpoint,
    offline_env,
    run_swift,
)

PLUGINS = [str(REPO / "plugins" / "dataset_registry.py"), str(REPO / "plugins" / "masktok.py")]


def _coco_fixture_gres(root):
    inst = json.loads(coco_fixture().read_text())
    images = root / "images"
    images.mkdir(parents=True)
    for im in inst["images"]:
        Image.new("RGB", (im["width"], im["height"]), (90, 80, 70)).save(
            images / im["file_name"])
    refs = []
    for split in ("train", "val"):
        refs += [
            {"ref_id": len(refs), "image_id": 98304, "split": split, "ann_id": [108703],
             "sentences": [{"sent_id": 0, "sent": "front black chair"}]},
            {"ref_id": len(refs) + 1, "image_id": 98304, "split": split,
             "ann_id": [108703, 99893], "sentences": [{"sent_id": 0, "sent": "chair and table"}]},
            {"ref_id": len(refs) + 2, "image_id": 98304, "split": split, "ann_id": [-1],
             "sentences": [{"sent_id": 0, "sent": "the red car"}]},
        ]
    grefs = root / "grefs.json"
    grefs.write_text(json.dumps(refs))
    return {"grefs": grefs, "instances": coco_fixture(), "images": images}


def _tool(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "data_tools" / name), *args],
                          capture_output=True, text=True, env=offline_env(), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_gres_tokenize_sft_infer_eval(tiny_model, trained_codec, tmp_path):
    data = _coco_fixture_gres(tmp_path / "gres")
    codec = f"builtin:{trained_codec[0]}"
    regs = []
    for split in ("train", "val"):
        out = _tool("tokenize_gres.py", "--grefs", str(data["grefs"]), "--instances",
                    str(data["instances"]), "--image-root", str(data["images"]),
                    "--split", split, "--codec", codec, "--out", str(tmp_path / split))
        assert f"gres_{split}:" in out and "rows written" in out
        regs.append(str(tmp_path / split / "datasets.yaml"))
    env = offline_env(SVP_DATASET_REGISTRY=":".join(regs))
    log = run_swift("sft", [
        "--model", str(tiny_model("qwen2_5_vl")), *TEMPLATE_ARGS["qwen2_5_vl"],
        "--external_plugins", *PLUGINS, "--dataset", "gres_train",
        "--tuner_type", "lora", "--modules_to_save", "embed_tokens", "lm_head",
        "--loss_scale", "default+mask_span", "--max_steps", "3", "--save_steps", "3",
        "--learning_rate", "1e-3", "--output_dir", str(tmp_path / "sft"), *TRAIN_ARGS,
    ], tmp_path / "sft.log", env, cwd=tmp_path)
    assert "masktok: added 514 mask tokens" in log
    assert "<|mt_start|>" in log  # the logged example shows the mask tokens in the labels
    ckpt = last_checkpoint(tmp_path / "sft")
    result = tmp_path / "infer.jsonl"
    run_swift("infer", ["--adapters", str(ckpt), "--val_dataset", "gres_val",
                        "--max_new_tokens", "24", "--max_batch_size", "4",
                        "--result_path", str(result)], tmp_path / "infer.log", env, cwd=tmp_path)
    out = _tool("eval_gres.py", "--pred", str(result), "--gt",
                str(tmp_path / "val" / "gres_val.jsonl"), "--image-root", str(data["images"]),
                "--codec", codec, "--out", str(tmp_path / "eval.json"))
    for key in ("gIoU", "cIoU", "N-acc", "T-acc", "Pr@0.7", "Pr@0.9"):
        assert key in out
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    n_val = len((tmp_path / "val" / "gres_val.jsonl").read_text().splitlines())
    assert metrics["samples"] == n_val and metrics["no_target"] >= 1
