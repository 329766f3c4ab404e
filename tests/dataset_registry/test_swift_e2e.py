"""Real `swift sft` (LoRA and full) and `swift infer` on the tiny models, with a registry
dataset selected as ``name%50``. Slow (about 15 s per command) but the only proof that the
plugin works where users run it."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import REPO, TEMPLATE_ARGS, TRAIN_ARGS, last_checkpoint, offline_env, run_swift

PLUGIN = str(REPO / "plugins" / "dataset_registry.py")


def _losses(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"\{'loss': '([0-9.]+)'", log)]


@pytest.mark.slow
# each architecture and each tuner once (the demo's registry stage adds Qwen2.5-VL + LoRA)
@pytest.mark.parametrize(("arch", "tuner"), [("qwen3_vl", "lora"), ("qwen2_5_vl", "full")])
def test_sft_then_infer(tiny_model, shapes_registry, tmp_path, arch, tuner):
    env = offline_env(SVP_DATASET_REGISTRY=str(shapes_registry))
    out_dir = tmp_path / "out"
    log = run_swift("sft", [
        "--model", str(tiny_model(arch)), *TEMPLATE_ARGS[arch],
        "--external_plugins", PLUGIN, "--dataset", "shapes%50",
        "--tuner_type", tuner, "--max_steps", "3", "--save_steps", "3",
        "--learning_rate", "1e-4", "--output_dir", str(out_dir), *TRAIN_ARGS,
    ], tmp_path / "sft.log", env, cwd=tmp_path)
    assert "dataset 'shapes': 20 rows" in log
    assert "50% of 20 rows -> 10 rows" in log
    assert re.search(r"train_dataset: Dataset\(\{\s+features: .*\s+num_rows: 10", log), log[-3000:]
    losses = _losses(log)
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    ckpt = last_checkpoint(out_dir)
    if tuner == "lora":
        assert (ckpt / "adapter_model.safetensors").is_file()
        model_args = ["--adapters", str(ckpt)]
    else:
        assert (ckpt / "model.safetensors").is_file()
        model_args = ["--model", str(ckpt)]
    assert list((out_dir).glob("v*/runs/*")), "TensorBoard logs expected"

    result = tmp_path / "infer.jsonl"
    # model_type, template and the plugin path come back from the checkpoint's args.json.
    run_swift("infer", [
        *model_args, "--val_dataset", "shapes%20", "--max_new_tokens", "6",
        "--max_batch_size", "2", "--result_path", str(result),
    ], tmp_path / "infer.log", env, cwd=tmp_path)
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    assert len(rows) == 4  # 20% of 20
    for row in rows:
        assert row["labels"].startswith("A ") and isinstance(row["response"], str)
        assert row["images"][0]["path"].endswith(".png")


@pytest.mark.slow
def test_bad_rows_stop_swift_sft_before_training(tiny_model, tmp_path):
    """A missing picture and the hostile ones of tests/common/test_hostile_images.py: the
    run stops before training with each row named. Before, the truncated, 20000x100,
    20000x90 and 16-bit pictures passed and ms-swift trained on random other rows in their
    place (rc 0), and the bomb crashed the plugin without naming a file."""
    from tests.common.test_hostile_images import make_pictures

    pictures = make_pictures(tmp_path / "pictures")
    names = ["nowhere.png", *(p.name for k, p in pictures.items()
                              if k not in ("good", "rotated"))]
    ann = tmp_path / "bad.jsonl"
    ann.write_text("".join(json.dumps({"image": name, "conversations": [
        {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}) + "\n"
        for name in names))
    reg = tmp_path / "reg.yaml"
    reg.write_text(f"bad: {{annotation_path: bad.jsonl, data_path: {tmp_path / 'pictures'}}}\n")
    env = offline_env(SVP_DATASET_REGISTRY=str(reg), MAX_PIXELS="1003520")
    log = run_swift("sft", [
        "--model", str(tiny_model("qwen2_5_vl")), *TEMPLATE_ARGS["qwen2_5_vl"],
        "--external_plugins", PLUGIN, "--dataset", "bad%50", "--tuner_type", "lora",
        "--max_steps", "1", "--output_dir", str(tmp_path / "out"), *TRAIN_ARGS,
    ], tmp_path / "sft.log", env, cwd=tmp_path, expect_ok=False)
    assert f"{ann}: line 1: missing_image: image file not found" in log
    for line, kind, name in ((2, "unreadable_image", "truncated.jpg"),
                             (3, "unusable_image", "ratio200.png"),
                             (4, "unusable_image", "ratio222.png"),
                             (5, "unusable_image", "sixteen.png"),
                             (6, "unreadable_image", "bomb.png")):
        assert f"{ann}: line {line}: {kind}: {tmp_path / 'pictures' / name}" in log, name
    assert ("Problems per kind: missing_image=1, unreadable_image=2, unusable_image=3"
            in log)
    assert "Train:" not in log and not _losses(log)
