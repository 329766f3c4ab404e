"""PerceptionLM (SAMTok's third base model) in ms-swift through the mask-token plugin: the
``perception_lm`` template encodes exactly what PerceptionLM's own processor and chat
template produce (ids, tiles, pixels), the model trains on those inputs with the mask
tokens added at load, and recipes/sft_plm_1b.sh runs end to end, in two processes under DDP,
on a tiny random PerceptionLM (timm Perception Encoder tower, Llama-layout vocabulary) built
offline."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

pytest.importorskip("swift")
pytest.importorskip("timm")

from swift.model import get_model_processor  # noqa: E402
from swift.template import get_template  # noqa: E402

from svp.masktok.tokens import codes_to_text, mask_token_list  # noqa: E402
from tests.helpers import (  # noqa: E402
    REPO,
    TRAIN_ARGS,
    last_checkpoint,
    offline_env,
    run_recipe,
    run_swift,
)

PLUGIN = REPO / "plugins" / "masktok.py"


@pytest.fixture(scope="module")
def loaded(tiny_model):
    from tests.helpers import load_entry

    load_entry("masktok")
    return get_model_processor(str(tiny_model("perception_lm")), model_type="perception_lm",
                               torch_dtype=torch.float32)


def _images():
    return [Image.new("RGB", (300, 190), (200, 30, 40)), Image.new("RGB", (90, 260), (0, 90, 9))]


@pytest.mark.parametrize("tiles", ["1", "4"])
def test_template_encodes_as_perception_lms_processor(loaded, tiles, monkeypatch):
    """Ids, labels and pixels of a two-image, two-turn conversation with mask tokens in the
    answer equal PerceptionLM's processor (transformers' code: tiling, thumbnail, token
    expansion) applied to the chat template's text, for at most one and at most four tiles
    (each plus the thumbnail); only answers are trained. The tiny model's chat template is
    our transcription of PerceptionLM's (tests/testing/test_tiny_model.py pins its text)."""
    monkeypatch.setenv("SVP_PLM_MAX_TILES", tiles)
    _, processor = loaded
    template = get_template(processor, template_type="perception_lm")
    template.set_mode("train")
    answer = f"It is {codes_to_text(230, 89)}."
    rows = {"messages": [{"role": "user", "content": "<image>Segment the red box."},
                         {"role": "assistant", "content": answer},
                         {"role": "user", "content": "<image>And this one?"},
                         {"role": "assistant", "content": "No target."}],
            "images": _images()}
    enc = template.encode(rows)
    chat = [{"role": "user", "content": [{"type": "image"},
                                          {"type": "text", "text": "Segment the red box."}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            {"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "And this one?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "No target."}]}]
    text = processor.apply_chat_template(chat)
    # (no return_tensors: the processor cannot stack images with different tile counts)
    want = processor(text=[text], images=_images(), max_num_tiles=int(tiles))
    assert enc["input_ids"] == list(want["input_ids"][0])
    per_image = [torch.as_tensor(p) for p in want["pixel_values"]]
    assert torch.equal(enc["pixel_values"], torch.cat(per_image))
    if tiles == "4":
        assert [len(p) for p in per_image] == [5, 4]  # tiles + thumbnail, per aspect ratio
    tok = processor.tokenizer
    trained = tok.decode([t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True)
                          if lab != -100])
    assert trained == f"{answer}<|eot_id|>No target.<|eot_id|>"
    assert set(tok.convert_tokens_to_ids(mask_token_list()[:3])) <= set(range(128256, 128896))


def test_model_takes_a_collated_batch(loaded):
    """Two samples with different tile counts collate into one batch the model accepts (each
    tile's features land on its own tokens; the model checks the counts) and backpropagates
    into the LLM, new mask-token rows included."""
    model, processor = loaded
    template = get_template(processor, template_type="perception_lm")
    template.set_mode("train")
    batch = [template.encode({"messages": [{"role": "user", "content": "<image>What?"},
                                           {"role": "assistant",
                                            "content": codes_to_text(1, 2)}],
                              "images": [im]}) for im in _images()]
    assert batch[0]["pixel_values"].shape[0] != batch[1]["pixel_values"].shape[0]
    inputs = template.data_collator(batch)
    assert inputs["pixel_values"].dim() == 5 and inputs["pixel_values"].shape[0] == 1
    model.zero_grad()
    out = model(**{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask",
                                                            "labels", "pixel_values")})
    out.loss.backward()
    rows = model.get_input_embeddings().weight.grad
    ids = processor.tokenizer.convert_tokens_to_ids(mask_token_list())
    assert torch.isfinite(out.loss) and rows[ids].abs().sum() > 0


@pytest.mark.distributed
def test_sft_plm_recipe_trains_and_infers(tiny_model, trained_codec, tmp_path):
    """recipes/sft_plm_1b.sh (SAMTok's PLM-1B settings: full LLM tuning, tower and projector
    frozen) in two processes under DDP on GRES rows tokenized by tokenize_gres, then swift
    infer from the checkpoint and eval_gres on its answers: one job (both ranks wrapped,
    every trainable tensor identical), the tower bit-equal to the base, the LLM moved, every
    held-out row answered and scored."""
    from safetensors.torch import load_file

    from tests.helpers import assert_one_job, run_dir
    from tests.masktok.test_swift_e2e import _coco_fixture_gres, _tool

    data = _coco_fixture_gres(tmp_path / "gres")
    for split in ("train", "val"):
        _tool("tokenize_gres.py", "--grefs", str(data["grefs"]), "--instances",
              str(data["instances"]), "--image-root", str(data["images"]), "--split", split,
              "--codec", f"builtin:{trained_codec[0]}", "--out", str(tmp_path / split))
    regs = ":".join(str(tmp_path / s / "datasets.yaml") for s in ("train", "val"))
    base = tiny_model("perception_lm")
    log = run_recipe("sft_plm_1b.sh", tmp_path / "sft.log", tmp_path, mode="ddp", nproc=2,
                     MODEL=str(base), DATASETS="gres_train", OUTPUT_DIR=str(tmp_path / "sft"),
                     SVP_DATASET_REGISTRY=regs, MAX_STEPS="3", SAVE_STEPS="3", BATCH="1",
                     LR="1e-3", DTYPE="float32", NUM_WORKERS="0", SVP_PLM_MAX_TILES="2",
                     EXTRA_ARGS=" ".join(TRAIN_ARGS[:2] + ["--seed", "7", "--callbacks",
                                                           "svp_rank_check"]))
    digests = assert_one_job(run_dir(tmp_path / "sft"), "ddp")
    assert not [n for n in digests if "vision_tower" in n or "multi_modal_projector" in n]
    assert "masktok: added 514 mask tokens" in log and "--tuner_type full" in log
    ckpt = last_checkpoint(tmp_path / "sft")
    before, after = load_file(str(base / "model.safetensors")), {}
    for f in ckpt.glob("model*.safetensors"):
        after.update(load_file(str(f)))
    tower = [k for k in before if "vision_tower" in k or "multi_modal_projector" in k]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    layer = "model.language_model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(before[layer], after[layer])
    result = tmp_path / "infer.jsonl"
    run_swift("infer", ["--model", str(ckpt), "--model_type", "perception_lm",
                        "--external_plugins", str(REPO / "plugins" / "dataset_registry.py"),
                        str(PLUGIN), "--val_dataset", "gres_val", "--max_new_tokens", "12",
                        "--result_path", str(result)], tmp_path / "infer.log",
              offline_env(SVP_DATASET_REGISTRY=regs, SVP_PLM_MAX_TILES="2"), cwd=tmp_path)
    answers = [json.loads(x) for x in result.read_text().splitlines()]
    assert len(answers) == 3 and all("response" in a for a in answers)
    _tool("eval_gres.py", "--pred", str(result), "--gt", str(tmp_path / "val" / "gres_val.jsonl"),
          "--image-root", str(data["images"]), "--codec", f"builtin:{trained_codec[0]}",
          "--out", str(tmp_path / "eval.json"))
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"]["samples"] == 3
