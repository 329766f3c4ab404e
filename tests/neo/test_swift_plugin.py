"""NEO in ms-swift, in process: the ``neo`` template against NEO's own conversation
text, the packing collator, the pre-forward hook, and the entry's registration."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import REPO, load_entry, offline_env


def picture(h=100, w=140, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8))


@pytest.fixture(scope="module")
def loaded(tiny_neo):
    from swift.model import get_model_processor
    from swift.template import get_template

    load_entry("neo")
    model, processor = get_model_processor(str(tiny_neo(2)), model_type="neo",
                                           torch_dtype=torch.float32)
    template = get_template(processor, template_type="neo")
    template.set_mode("train")
    return model, processor, template


def two_turns(image=True):
    row = {"messages": [{"role": "user", "content": "Describe."},
                        {"role": "assistant", "content": "A noisy picture."},
                        {"role": "user", "content": "Anything else?"},
                        {"role": "assistant", "content": "No."}]}
    if image:
        row["images"] = [picture()]
    return row


def test_entry_imports_twice_without_double_registration():
    code = ("import runpy; from svp.neo.swift_plugin import register; register(); "
            "runpy.run_path('plugins/neo.py'); runpy.run_path('plugins/neo.py'); "
            "from swift.model.register import MODEL_MAPPING; "
            "from swift.template.register import TEMPLATE_MAPPING; "
            "from transformers import AutoConfig; "
            "assert 'neo' in MODEL_MAPPING and 'neo' in TEMPLATE_MAPPING; "
            "assert MODEL_MAPPING['neo'].is_multimodal; "
            "assert TEMPLATE_MAPPING['neo'].default_system is None; "
            "AutoConfig.for_model('neo_chat')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=offline_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_encode_matches_neo_conversation_text(loaded):
    """NEO's text (data/utils.py): ChatML, no system, ``<image>\\n`` prepended to a single
    image sample, every answer labelled with its ``<|im_end|>\\n``; N = (H'/32)(W'/32)."""
    _, processor, template = loaded
    enc = template.encode(two_turns())
    tok = processor
    ids, labels = enc["input_ids"], enc["labels"]
    n = (96 // 32) * (128 // 32)  # 100x140 -> smart_resize 96x128 (min 1024, max 16384)
    ctx = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert ids.count(ctx) == n
    text = tok.decode(ids).replace("<IMG_CONTEXT>" * n, "<IMAGE>")
    assert text == ("<|im_start|>user\n<img><IMAGE></img>\nDescribe.<|im_end|>\n"
                    "<|im_start|>assistant\nA noisy picture.<|im_end|>\n"
                    "<|im_start|>user\nAnything else?<|im_end|>\n"
                    "<|im_start|>assistant\nNo.<|im_end|>\n")
    assert tok.decode([x for x in labels if x != -100]) == \
        "A noisy picture.<|im_end|>\nNo.<|im_end|>\n"
    assert enc["image_grid_hw"].tolist() == [[6, 8]]
    assert enc["pixel_values"].shape == (48, 768)


def test_multi_image_budget_and_untagged_images(loaded):
    _, processor, template = loaded
    row = {"messages": [{"role": "user", "content": "<image> and <image>?"},
                        {"role": "assistant", "content": "Same."}],
           "images": [picture(256, 256, 1), picture(256, 256, 2)]}
    enc = template.encode(row)
    # max 16384 px, two images: each max(2 * 16384 / 2, 1024) = 16384 -> 128x128
    assert enc["image_grid_hw"].tolist() == [[8, 8], [8, 8]]
    row["images"].append(picture(256, 256, 3))
    row["messages"][0]["content"] = "<image><image><image>?"
    enc = template.encode(row)  # three: 10922 px each -> 96x96 (banker's rounding)
    assert enc["image_grid_hw"].tolist() == [[6, 6]] * 3


def test_collator_packs_one_row_with_boundaries_and_weights(loaded):
    _, _, template = loaded
    rows = [two_turns(), two_turns(image=False), two_turns()]
    encoded = [template.encode(r) for r in rows]
    batch = template.data_collator(encoded)
    lens = [len(e["input_ids"]) for e in encoded]
    assert batch["input_ids"].shape == (1, sum(lens))
    assert batch["labels"].shape == (1, sum(lens))
    assert batch["seq_boundaries"].tolist() == [0, lens[0], lens[0] + lens[1], sum(lens)]
    assert batch["pixel_values"].shape[0] == 2 * 48
    assert batch["image_grid_hw"].tolist() == [[6, 8], [6, 8]]
    w = batch["loss_weight"][0]
    for i, e in enumerate(encoded):  # square: 1/sqrt(n) on supervised tokens of sample i
        a = batch["seq_boundaries"][i]
        n = sum(1 for x in e["labels"] if x != -100)
        seg = w[a:a + lens[i]]
        sup = torch.tensor(e["labels"]) != -100
        assert torch.allclose(seg[sup], torch.full((n,), n ** -0.5))
        assert not seg[~sup].any()
    assert "attention_mask" not in batch and "loss_scale" not in batch


def test_pre_forward_hook_keeps_every_key_and_the_model_takes_them(loaded):
    model, _, template = loaded
    batch = template.data_collator([template.encode(two_turns()) for _ in range(2)])
    _, kwargs = template.pre_forward_hook(model, None, dict(batch))
    assert set(kwargs) == set(batch)
    params = inspect.signature(model.forward).parameters
    assert set(kwargs) <= set(params)
    # no **kwargs: the HF Trainer then neither rescales by a global token count nor skips
    # the gradient-accumulation division (model_accepts_loss_kwargs is False)
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert template.model_accepts_loss_kwargs is False  # ms-swift's trainer reads this
    out = model(**kwargs)
    assert torch.isfinite(out.loss)


def test_inference_collator_pads_left_and_generate_returns_prompt_then_answer(loaded):
    model, processor, template = loaded
    template.set_mode("transformers")
    try:
        short = {"messages": [{"role": "user", "content": "Hi?"}]}
        long = {"messages": [{"role": "user", "content": "Describe."}], "images": [picture()]}
        batch = template.data_collator([template.encode(short), template.encode(long)])
    finally:
        template.set_mode("train")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1].all()
    out = model.generate(**batch, max_new_tokens=3, return_dict_in_generate=True)
    seq = out["sequences"]
    assert seq.shape == (2, batch["input_ids"].shape[1] + 3)
    assert torch.equal(seq[:, :batch["input_ids"].shape[1]], batch["input_ids"])


def test_row_cap_leaves_out_overflow_and_counts_it(loaded, monkeypatch):
    from svp.neo.swift_plugin import NeoTemplate

    _, _, template = loaded
    encoded = [template.encode(two_turns(image=False)) for _ in range(3)]
    n = len(encoded[0]["input_ids"])
    monkeypatch.setenv("SVP_NEO_ROW_LENGTH", str(2 * n + 1))
    before = NeoTemplate.dropped
    batch = template.data_collator(encoded)
    assert batch["seq_boundaries"].tolist() == [0, n, 2 * n]
    assert NeoTemplate.dropped == before + 1
    monkeypatch.setenv("SVP_NEO_ROW_LENGTH", str(n // 2))  # the first sample always stays
    assert template.data_collator(encoded)["seq_boundaries"].tolist() == [0, n]


def test_loader_takes_missing_image_ids_from_the_tokenizer_and_refuses_wrong_ones(
        loaded, tiny_neo, tmp_path):
    """Released configs carry no ``img_end_token_id``: it comes from the tokenizer. A config
    whose ids disagree with the tokenizer is refused with the reason."""
    import json
    import shutil

    from swift.model import get_model_processor

    ckpt = tmp_path / "neo"
    shutil.copytree(tiny_neo(2), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["img_end_token_id"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    model, _ = get_model_processor(str(ckpt), model_type="neo", torch_dtype=torch.float32,
                                   load_model=False)
    assert model is None
    from swift.model import get_processor

    assert get_processor(str(ckpt), model_type="neo").model_info.config.img_end_token_id \
        == 151671
    cfg["img_start_token_id"] = 151672
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="image token ids"):
        get_processor(str(ckpt), model_type="neo")


def test_a_single_image_tagged_later_stays_where_tagged(loaded):
    """A departure, named in docs/fidelity.md: NEO's kit prepends ``<image>\\n`` to the first
    turn of a single-image sample whenever that turn lacks the tag, leaving a later
    ``<image>`` as literal text; ours puts the image where the row tags it."""
    _, processor, template = loaded
    row = {"messages": [{"role": "user", "content": "Describe."},
                        {"role": "assistant", "content": "Nothing yet."},
                        {"role": "user", "content": "<image>And now?"},
                        {"role": "assistant", "content": "A picture."}],
           "images": [picture()]}
    text = processor.decode(template.encode(row)["input_ids"])
    first, second = text.split("<|im_start|>user\n")[1:3]
    assert "<img>" not in first and second.startswith("<img>") and "<image>" not in text
