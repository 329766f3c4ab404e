"""Crop templates on token level, on the tiny Qwen2.5-VL and Qwen3-VL: crops right after each
``</tool_call>``, no loss on image tokens, text after a crop trained, mrope positions equal to
the model's own ``get_rope_index``, the crop pixels equal to the inference loop's crop."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from svp.croptool.geometry import CropPolicy, model_input_size
from svp.croptool.swift_template import CropToolMixin
from tests.helpers import crop_setup, load_entry

load_entry("croptool")  # registers the crop templates

VISION_START, VISION_END, IMAGE_PAD = 151652, 151653, 151655
ANSWER = ("<think>look <tool_call>[10, 20, 200, 180]</tool_call> left part "
          "<tool_call>[300, 100, 420, 300]</tool_call> right part</think><answer>cat</answer>")


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def setup(request, tiny_model, tmp_path_factory):
    arch = request.param
    model, processor, template, path = crop_setup(tiny_model(arch), arch,
                                                  tmp_path_factory.mktemp("img"))
    return arch, model, processor, template, path


def _row(path, answer=ANSWER, images=None):
    return {"messages": [{"role": "user", "content": "<image>What is it?"},
                         {"role": "assistant", "content": answer}],
            "images": images or [str(path)]}


def _spans(ids):
    """(start, end) of each <|vision_start|> .. <|vision_end|> run."""
    starts = [i for i, t in enumerate(ids) if t == VISION_START]
    return [(s, ids.index(VISION_END, s)) for s in starts]


def test_two_crops_right_after_each_tool_call(setup):
    arch, model, processor, template, path = setup
    tok = processor.tokenizer
    enc = template.encode(_row(path))
    ids, labels = enc["input_ids"], enc["labels"]
    spans = _spans(ids)
    assert len(spans) == 3 and len(enc["image_grid_thw"]) == 3
    end_call = tok.convert_tokens_to_ids("</tool_call>")
    for s, _ in spans[1:]:
        assert ids[s - 1] == end_call  # the crop starts right after </tool_call>
    # no loss on any image token (pads, start, end), loss on </tool_call> and the text after
    for s, e in spans:
        assert all(labels[i] == -100 for i in range(s, e + 1))
    assert all(labels[i] == -100 for i, t in enumerate(ids) if t in (VISION_START, VISION_END,
                                                                       IMAGE_PAD))
    for s, e in spans[1:]:
        assert labels[s - 1] == end_call
        assert labels[e + 1] == ids[e + 1] != -100
    trained = tok.decode([t for t in labels if t != -100])
    assert trained.startswith(ANSWER) and "<|image_pad|>" not in trained
    # pad counts match each image's grid
    merge = processor.image_processor.merge_size ** 2
    for (s, e), thw in zip(spans, enc["image_grid_thw"], strict=True):
        assert e - s - 1 == int(thw.prod()) // merge


def test_crop_pixels_are_the_inference_crop(setup):
    arch, model, processor, template, path = setup
    enc = template.encode(_row(path))
    policy = CropPolicy(arch)
    original = Image.open(path).convert("RGB")
    expected = [policy.main_image(original)]
    for box in ([10, 20, 200, 180], [300, 100, 420, 300]):
        crop, _, reason = policy.execute(original, box)
        assert reason is None
        expected.append(crop)
    ref = processor.image_processor(images=expected, return_tensors="pt", do_resize=False)
    assert torch.equal(ref["image_grid_thw"], enc["image_grid_thw"])
    assert torch.allclose(ref["pixel_values"], enc["pixel_values"])


def test_positions_equal_the_models_get_rope_index(setup):
    arch, model, processor, template, path = setup
    one = template.encode(_row(path))
    other = template.encode(_row(path, ANSWER.replace("left part ", "")))
    batch = template.data_collator([one, other])
    ids = batch["input_ids"]
    mm = (ids == IMAGE_PAD).int()
    ref, _ = model.model.get_rope_index(ids, mm_token_type_ids=mm,
                                        image_grid_thw=batch["image_grid_thw"],
                                        attention_mask=batch["attention_mask"])
    pos = batch["position_ids"]
    assert pos.shape[0] in (3, 4)  # ms-swift prepends the text positions in some versions
    assert torch.equal(pos[-3:], ref)
    # and they are mrope positions: the text after each image (from <|vision_end|> on)
    # resumes at max(image) + 1, equal on all three axes
    p = ref[:, 0]
    for s, e in _spans(one["input_ids"]):
        resume = int(p[:, s + 1:e].max()) + 1
        assert p[:, e].tolist() == [resume] * 3 and p[:, e + 1].tolist() == [resume + 1] * 3


def test_precut_crops_are_used_as_given(setup, tmp_path):
    arch, model, processor, template, path = setup
    crop = Image.new("RGB", (120, 90), (0, 255, 0))
    crop.save(tmp_path / "c.png")
    answer = "<tool_call>[10, 20, 200, 180]</tool_call><image> then <answer>x</answer>"
    enc = template.encode(_row(path, answer, [str(path), str(tmp_path / "c.png")]))
    assert len(enc["image_grid_thw"]) == 2  # not cut again
    policy = CropPolicy(arch)
    given = crop.resize(model_input_size(120, 90, policy.factor, policy.min_pixels,
                                         policy.max_pixels), Image.BICUBIC)
    ref = processor.image_processor(images=[policy.main_image(Image.open(path).convert("RGB")),
                                            given], return_tensors="pt", do_resize=False)
    assert torch.allclose(ref["pixel_values"], enc["pixel_values"])


def test_a_crop_given_later_in_the_text_belongs_to_its_call(setup, tmp_path):
    """VLM-R3's release puts crop i after part i, which may go on after its call: an
    <image> after a call and before the next call is that call's crop (no second cut); the
    next call, with no <image> before the answer, is cut."""
    arch, model, processor, template, path = setup
    Image.new("RGB", (120, 90), (0, 255, 0)).save(tmp_path / "c.png")
    answer = ("<tool_call>[10, 20, 200, 180]</tool_call> a cat, I think.\n<image>"
              "<tool_call>[300, 100, 420, 300]</tool_call> then <answer>x</answer>")
    enc = template.encode(_row(path, answer, [str(path), str(tmp_path / "c.png")]))
    assert len(enc["image_grid_thw"]) == 3  # main, the given crop, one cut for call 2
    text = processor.tokenizer.decode(enc["input_ids"])
    assert "</tool_call> a cat, I think.\n<|vision_start|>" in text
    assert text.count("</tool_call><|vision_start|>") == 1


def test_source_image_decoded_once(setup, monkeypatch):
    arch, model, processor, template, path = setup
    calls = []
    real_open = Image.open

    def counting_open(fp, *a, **k):
        calls.append(str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", counting_open)
    enc = template.encode(_row(path))
    assert len(enc["image_grid_thw"]) == 3 and len(calls) == 1  # one decode, three images


def test_bad_box_in_training_text_gives_no_crop_and_no_crash(setup):
    arch, model, processor, template, path = setup
    before = CropToolMixin.bad_boxes
    answer = ("<tool_call>[200, 20, 10, 180]</tool_call> swapped "
              "<tool_call>[1, 2, x, 4]</tool_call> text "
              "<tool_call>[10, 20, 200, 180]</tool_call> ok")
    enc = template.encode(_row(path, answer))
    assert len(enc["image_grid_thw"]) == 2  # main + the one good crop
    assert CropToolMixin.bad_boxes == before + 2


def test_sizes_other_than_the_environments_are_refused(setup, monkeypatch):
    """--max_pixels (rescaling after the crop tool sized the images) and processor bounds
    other than the environment's (boxes in another space than the pixels) stop the encode."""
    arch, model, processor, template, path = setup
    monkeypatch.setattr(template, "max_pixels", 200704)
    with pytest.raises(ValueError, match="set the MAX_PIXELS environment variable instead"):
        template.encode(_row(path))
    monkeypatch.setattr(template, "max_pixels", None)
    from qwen_vl_utils import vision_process as vp

    monkeypatch.setattr(vp, "IMAGE_MAX_TOKEN_NUM", vp.IMAGE_MAX_TOKEN_NUM // 2)
    monkeypatch.delattr(template, "crop_policy", raising=False)  # read again
    with pytest.raises(ValueError, match="processor's pixel bounds"):
        template.encode(_row(path))


def test_rows_converted_for_another_space_stop_the_run(setup, monkeypatch):
    """A row's ``crop_space`` (written by convert_vlmr3.py) must be the template's: Qwen2.5-VL
    pixel boxes under the Qwen3-VL template, or a main image given at another size, would be
    read in another space and cut other crops. The error stops the run through ms-swift's
    row-replacement loop instead of every row being swapped for another bad one."""
    from PIL import Image

    from svp.common.swift_trainer import CountedEncode, FatalRowError, StopTraining

    arch, model, processor, template, path = setup
    own = template.crop_policy.data_space(*Image.open(path).size)
    assert own == {"qwen2_5_vl": "qwen2_5_vl 588x448", "qwen3_vl": "qwen3_vl"}[arch]
    assert template.encode({**_row(path), "crop_space": own})["input_ids"]
    other = {"qwen2_5_vl": "qwen3_vl", "qwen3_vl": "qwen2_5_vl 588x448"}[arch]
    bad = {**_row(path), "crop_space": other}
    with pytest.raises(FatalRowError, match=f"converted for '{other}'"):
        template.encode(bad)
    with pytest.raises(StopTraining):
        CountedEncode(template.encode)(bad)
    assert template.encode(_row(path))["input_ids"]  # rows without a record: not checked
    if arch == "qwen2_5_vl":  # same family, the main image at another size: other pixels
        monkeypatch.setenv("SVP_CROP_MAIN_SHORT", "512")
        from svp.common import settings as common_settings

        monkeypatch.setattr(common_settings, "_LOGGED", set(), raising=False)
        monkeypatch.delattr(template, "crop_policy", raising=False)
        try:
            with pytest.raises(FatalRowError, match="reads them as 'qwen2_5_vl 672x504'"):
                template.encode({**_row(path), "crop_space": own})
        finally:
            monkeypatch.delenv("SVP_CROP_MAIN_SHORT")
            monkeypatch.delattr(template, "crop_policy", raising=False)
