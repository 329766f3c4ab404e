"""The offline tiny models load like real checkpoints and put special tokens at Qwen's ids."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from svp.testing.tiny_model import (
    FIRST_SPECIAL_ID,
    VOCAB_SIZE,
    added_tokens,
    build_tiny_model,
)
from tests.helpers import REPO

ARCHES = ["qwen2_5_vl", "qwen3_vl"]
# The ids ms-swift's Qwen templates and the HF models rely on.
REAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
            "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655,
            "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658}


@pytest.mark.parametrize("arch", ARCHES)
def test_special_tokens_sit_at_qwen_ids(tiny_model, arch):
    processor = AutoProcessor.from_pretrained(tiny_model(arch))
    tok = processor.tokenizer
    for text, tid in REAL_IDS.items():
        assert tok.convert_tokens_to_ids(text) == tid, text
        assert tok.encode(text, add_special_tokens=False) == [tid], text
    expected_len = {"qwen2_5_vl": 151665, "qwen3_vl": 151669}[arch]
    assert len(tok) == expected_len
    if arch == "qwen3_vl":
        assert tok.convert_tokens_to_ids("<think>") == 151667
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # special=False tokens (tool calls) survive skip_special_tokens, like Qwen's.
    ids = tok.encode("<tool_call>[1, 2, 3, 4]</tool_call>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "<tool_call>[1, 2, 3, 4]</tool_call>"


@pytest.mark.parametrize("arch", ARCHES)
def test_bpe_round_trips_text(tiny_model, arch):
    tok = AutoProcessor.from_pretrained(tiny_model(arch)).tokenizer
    text = 'Please segment the front black chair: {"bbox_2d": [12, 340, 56, 78]} — ünïcödé ✓'
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert max(ids) < FIRST_SPECIAL_ID
    digits = tok.tokenize("2048")
    assert digits == ["2", "0", "4", "8"]  # Qwen splits numbers digit by digit


@pytest.mark.parametrize("arch", ARCHES)
def test_config_processor_and_forward(tiny_model, arch):
    path = tiny_model(arch)
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == arch
    assert config.text_config.vocab_size == VOCAB_SIZE
    assert config.image_token_id == REAL_IDS["<|image_pad|>"]
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.endswith("What is it?<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|image_pad|>") == 1
    inputs = processor(text=[text], images=[Image.new("RGB", (96, 64), (200, 10, 10))],
                       return_tensors="pt")
    n_pad = int((inputs["input_ids"] == REAL_IDS["<|image_pad|>"]).sum())
    merge = processor.image_processor.merge_size
    assert n_pad == int(inputs["image_grid_thw"].prod()) // merge**2
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert len(new) > 0
    # Filler rows of lm_head are zero, so greedy decoding picks BPE or special ids only.
    n_bpe = 256 + len(json.loads(processor.tokenizer.backend_tokenizer.to_str())["model"]
                      ["merges"])
    assert all(t < n_bpe or t >= FIRST_SPECIAL_ID for t in new.tolist())
    head = model.get_output_embeddings().weight
    assert torch.count_nonzero(head[n_bpe:FIRST_SPECIAL_ID]) == 0
    assert torch.count_nonzero(head[FIRST_SPECIAL_ID:FIRST_SPECIAL_ID + 10]) > 0
    assert len(added_tokens(arch)) == len(processor.tokenizer) - FIRST_SPECIAL_ID


def _digest(path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        h.update((path / name).read_bytes())
    return h.hexdigest()


def test_builder_is_seeded_and_cli_works(tmp_path):
    """Same seed -> byte-identical model and tokenizer; the CLI writes a loadable dir."""
    a = build_tiny_model("qwen2_5_vl", tmp_path / "a", seed=3)
    proc = subprocess.run(
        [sys.executable, str(REPO / "data_tools" / "make_tiny_model.py"), "--arch",
         "qwen2_5_vl", "--out", str(tmp_path / "b"), "--seed", "3"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote qwen2_5_vl tiny model" in proc.stdout
    assert _digest(a) == _digest(tmp_path / "b")
    c = build_tiny_model("qwen2_5_vl", tmp_path / "c", seed=4)
    assert _digest(a) != _digest(c)
    assert not list(tmp_path.glob(".a.*")), "temporary build folders must not be left behind"


def test_unknown_arch_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown arch"):
        build_tiny_model("llava", tmp_path / "x")


def test_perception_lm_has_llama3_ids_and_runs(tiny_model):
    """The tiny PerceptionLM: Llama 3's special ids (PerceptionLM's <|image|> / <|video|> at
    128002 / 128003, as its config), 128256 tokens, Llama 3's digit grouping, tiles of the
    tiny tower expanded by its own processor, a forward and a generate."""
    from transformers import PerceptionLMForConditionalGeneration

    path = tiny_model("perception_lm")
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    ids = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|image|>": 128002,
           "<|video|>": 128003, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
           "<|eot_id|>": 128009}
    for text, tid in ids.items():
        assert tok.encode(text, add_special_tokens=False) == [tid], text
    assert len(tok) == 128256 and tok.image_token_id == 128002
    assert tok.tokenize("20481") == ["204", "81"]  # Llama 3 groups digits by three
    config = AutoConfig.from_pretrained(path)
    assert (config.image_token_id, config.text_config.vocab_size) == (128002, 128256)
    model = PerceptionLMForConditionalGeneration.from_pretrained(path).eval()
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}],
        add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert text.endswith("<|image|>Hi?<|eot_id|><|start_header_id|>assistant"
                         "<|end_header_id|>\n\n")
    inputs = processor(text=[text], images=[Image.new("RGB", (300, 190))], return_tensors="pt")
    assert inputs["pixel_values"].shape[1:] == (5, 3, 112, 112)  # 2 x 2 tiles + thumbnail
    assert int((inputs["input_ids"] == 128002).sum()) == 5 * 4 * 4
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
