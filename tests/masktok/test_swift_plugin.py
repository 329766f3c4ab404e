"""plugins/masktok.py inside ms-swift (in process): vocabulary at load, mask-span loss weights,
constrained decoding with transformers generate and ms-swift's engine."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

pytest.importorskip("swift")

from swift.model import get_model_processor  # noqa: E402
from swift.template import get_template  # noqa: E402

from svp.masktok.swift_plugin import MaskSpanLossScale  # noqa: E402
from svp.masktok.tokens import (  # noqa: E402
    MT_START,
    MaskTokenLogitsProcessor,
    codes_to_text,
    mask_token_list,
    parse_mask_tokens,
)
from tests.helpers import REPO, load_entry  # noqa: E402

load_entry("masktok")  # registers, as --external_plugins does


@pytest.fixture(scope="module")
def loaded(tiny_model):
    model, processor = get_model_processor(str(tiny_model("qwen2_5_vl")),
                                           model_type="qwen2_5_vl", torch_dtype=torch.float32)
    return model, processor


def test_entry_imports_twice():
    from swift.utils.utils import import_external_file

    import_external_file(str(REPO / "plugins" / "masktok.py"))
    import_external_file(str(REPO / "plugins" / "masktok.py"))


def test_tokens_added_at_load(loaded):
    model, processor = loaded
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids(mask_token_list())
    assert ids == list(range(151665, 151665 + 514))
    assert model.get_input_embeddings().weight.shape[0] == 152192
    assert model.config.text_config.vocab_size == 152192 or model.config.vocab_size == 152192
    text = codes_to_text(230, 89)
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) == text


def test_new_special_tokens_route_is_refused(tiny_model):
    """ms-swift's --new_special_tokens would make the mask tokens special (dropped by every
    skip_special_tokens decode): loading stops with the way to do it; other tokens pass."""
    with pytest.raises(ValueError, match="remove them from --new_special_tokens"):
        get_model_processor(str(tiny_model("qwen2_5_vl")), model_type="qwen2_5_vl",
                            load_model=False, new_special_tokens=mask_token_list()[:3])
    _, processor = get_model_processor(str(tiny_model("qwen2_5_vl")), model_type="qwen2_5_vl",
                                       load_model=False, new_special_tokens=["<|other|>"])
    assert "<|other|>" in processor.tokenizer.all_special_tokens


def test_mask_span_loss_scale_split(monkeypatch):
    monkeypatch.setenv("SVP_MASK_LOSS_WEIGHT", "3")
    ls = MaskSpanLossScale("default")
    text = f"It is {codes_to_text(1, 2)} and {codes_to_text(3)}."
    parts, weights = ls.get_loss_scale(text)
    assert "".join(parts) == text
    assert weights == [1.0, 3.0, 1.0, 3.0, 1.0]
    assert ls.get_loss_scale("No target.") == (["No target."], [1.0])
    monkeypatch.setenv("SVP_MASK_LOSS_WEIGHT", "x")
    with pytest.raises(ValueError, match="SVP_MASK_LOSS_WEIGHT=.x.: expected a number"):
        ls.get_loss_scale(text)


def test_template_encode_weights_mask_tokens(loaded, monkeypatch):
    monkeypatch.setenv("SVP_MASK_LOSS_WEIGHT", "2.5")
    _, processor = loaded
    template = get_template(processor, template_type="qwen2_5_vl",
                            loss_scale="default+mask_span")
    template.set_mode("train")
    answer = f'```json\n[{{"mask_2d": "{codes_to_text(5, 6)}", "label": "x"}}]\n```'
    enc = template.encode({"messages": [{"role": "user", "content": "<image>Segment x."},
                                        {"role": "assistant", "content": answer}],
                           "images": [Image.new("RGB", (64, 64), (9, 9, 9))]})
    ids, scale = enc["input_ids"], enc["loss_scale"]
    tok = processor.tokenizer
    mask_ids = set(tok.convert_tokens_to_ids(mask_token_list()))
    weights = {scale[i] for i, t in enumerate(ids) if t in mask_ids}
    assert weights == {2.5}
    trained = [i for i, lab in enumerate(enc["labels"]) if lab != -100]
    assert {scale[i] for i in trained if ids[i] not in mask_ids} == {1.0}
    assert all(scale[i] == 0 for i, lab in enumerate(enc["labels"]) if lab == -100)


def test_constrained_generation_with_transformers_generate(loaded):
    model, processor = loaded
    tok = processor.tokenizer
    proc = MaskTokenLogitsProcessor.from_tokenizer(tok)
    start = proc.ids.start

    def push_masks(input_ids, scores):  # make the random model emit many masks
        scores = scores.clone()
        scores[:, start] += 30.0
        return scores

    from transformers import LogitsProcessorList

    inputs = tok(["Segment the chair:", "Where is it?"], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=40, do_sample=True, temperature=1.0,
                         logits_processor=LogitsProcessorList([push_masks, proc]),
                         pad_token_id=tok.pad_token_id)
    text = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:])
    span_re = r"<\|mt_start\|>(?:<\|mt_\d{4}\|>)*(?:<\|mt_end\|>)?"
    spans = [s for t in text for s in re.findall(span_re, t)]
    complete = [s for s in spans if s.endswith("<|mt_end|>")]
    assert len(complete) >= 10
    for s in complete:
        assert len(parse_mask_tokens(s)) == 1 and s.count("<|mt_") == 4
    assert sum(t.count(MT_START) for t in text) == len(spans)


def test_swift_engine_generation_is_constrained(loaded, monkeypatch):
    from swift.infer_engine import RequestConfig, TransformersEngine

    model, processor = loaded
    template = get_template(processor, template_type="qwen2_5_vl")
    engine = TransformersEngine(model, template=template, max_batch_size=2)
    kwargs = template.prepare_generate_kwargs(
        {"generation_config": model.generation_config}, model=model)
    procs = list(kwargs.get("logits_processor") or [])
    assert any(isinstance(p, MaskTokenLogitsProcessor) for p in procs)
    monkeypatch.setenv("SVP_CONSTRAIN_MASKS", "0")
    kwargs = template.prepare_generate_kwargs(
        {"generation_config": model.generation_config}, model=model)
    assert not any(isinstance(p, MaskTokenLogitsProcessor)
                   for p in kwargs.get("logits_processor") or [])
    monkeypatch.delenv("SVP_CONSTRAIN_MASKS")
    resp = engine.infer([{"messages": [{"role": "user", "content": "hi"}]}],
                        RequestConfig(max_tokens=8, temperature=0))
    assert isinstance(resp[0].choices[0].message.content, str)
