"""The ``crop_tool`` scheduler under ms-swift's own colocate loop (``run_multi_turn``), its
rollout records, and the training encode of a rollout compared with the SFT encode of the
same text: the same token ids, labels, images and pixels (rollout format = SFT format).

The rounds' *text* is scripted (a tiny random model does not call tools); everything else is
real: the tokenizer, the real ``TransformersEngine`` generating on every continued request
(so the id-held assistant message with its crops is encoded and run by the engine), the
scheduler, ``OnPolicySample.apply_rollout_output`` and ms-swift's ``encode_sample``.
"""

from __future__ import annotations

import pytest
import torch

from svp.croptool.format import VISION_BLOCK
from svp.croptool.geometry import CropPolicy
from svp.croptool.rewards import Trajectory
from svp.croptool.swift_rgrpo import CropToolScheduler, pending_call
from tests.helpers import crop_setup, load_entry

load_entry("rgrpo")  # registers the templates, rewards and scheduler

TURNS = ["<think>look <tool_call>[10, 20, 200, 180]</tool_call>",
         " left part <tool_call>[300, 100, 420, 300]</tool_call>",
         " right part</think><answer>cat</answer>"]
SFT_TEXT = "".join(TURNS)
VISION_START = 151652


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def env(request, tiny_model, tmp_path_factory):
    from swift.infer_engine import TransformersEngine
    from swift.template import get_template

    arch = request.param
    model, processor, template, path = crop_setup(tiny_model(arch), arch,
                                                  tmp_path_factory.mktemp("img"))
    engine = TransformersEngine(model, template=get_template(processor,
                                                             template_type=f"{arch}_crop"))
    return arch, processor.tokenizer, template, engine, path


def _output(tok, text, finish="stop"):
    from swift.infer_engine.protocol import (
        ChatCompletionResponse,
        ChatCompletionResponseChoice,
        ChatMessage,
        RolloutOutput,
        UsageInfo,
    )

    ids = tok.encode(text, add_special_tokens=False)
    if not text.endswith("</tool_call>"):  # an engine stopping on EOS: id sampled, not in text
        ids.append(tok.convert_tokens_to_ids("<|im_end|>"))
    choice = ChatCompletionResponseChoice(0, ChatMessage("assistant", text), finish, token_ids=ids)
    return RolloutOutput(response=ChatCompletionResponse("m", [choice], UsageInfo(0, len(ids), 0)))


def _rollout(env, turns, max_turns=6, question="<image>What is it?"):
    """Drive ms-swift's colocate loop; the engine really runs on every continued request."""
    from swift.infer_engine import RequestConfig
    from swift.infer_engine.protocol import RolloutInferRequest
    from swift.rl_core.data import OnPolicySample
    from swift.rollout import run_multi_turn

    arch, tok, template, engine, path = env
    sched = CropToolScheduler(max_turns=max_turns, tokenizer=tok, template=template)
    sample = OnPolicySample.from_row({"messages": [{"role": "user", "content": question}],
                                      "images": [str(path)], "solution": "cat"})
    req = RolloutInferRequest(messages=[dict(m) for m in sample.messages], images=[str(path)])
    seen = {"turn": 1, "engine_images": []}

    def rollout_fn(requests, cfg):
        outs = []
        for r in requests:
            real = engine.infer([r], RequestConfig(max_tokens=2, temperature=0,
                                                   return_details=True))[0]
            seen["engine_images"].append(len(r.images))
            # the engine encoded the id-held crops (one vision block per image) and generated
            assert real.prompt_token_ids.count(VISION_START) == len(r.images)
            assert real.choices[0].token_ids
            outs.append(_output(tok, turns[seen["turn"]]))
            seen["turn"] += 1
        return outs

    first = _output(tok, turns[0])
    out = run_multi_turn([req], [first], sched, rollout_fn, RequestConfig(max_tokens=64),
                         max_turns=max_turns)[0]
    sample.apply_rollout_output(rollout_output=out)
    return sched, out, sample, seen


def test_rollout_executes_crops_and_records_them(env):
    arch, tok, template, engine, path = env
    sched, out, sample, seen = _rollout(env, TURNS)
    assert out.rollout_infos["num_turns"] == 3
    assert seen["engine_images"] == [2, 3]  # main + 1 crop, then main + 2 crops
    info = out.rollout_infos["crop_tool"]
    assert info["executed"] == 2 and [c["box"] for c in info["calls"]] == [
        [10.0, 20.0, 200.0, 180.0], [300.0, 100.0, 420.0, 300.0]]
    assert info["image_wh"] == [640, 480]
    assert len(out.rollout_infos["images"]) == 3 and len(sample.images) == 3
    # one assistant turn whose vision tokens carry no loss
    ids, mask = out.response_token_ids, out.response_loss_mask
    assert len(ids) == 1
    vision = set(tok.encode(VISION_BLOCK, add_special_tokens=False))
    assert all(m == 0 for t, m in zip(ids[0], mask[0], strict=True) if t in vision)
    assert sum(m == 0 for m in mask[0]) == 6
    assert sample.messages[-1]["content"].count(VISION_BLOCK) == 2
    traj = Trajectory.from_infos(out.rollout_infos)
    assert traj.executed == 2 and traj.model_wh == tuple(
        CropPolicy(arch).main_size(640, 480))


def test_training_encode_equals_sft_encode(env):
    """What GRPO trains on is token-for-token and pixel-for-pixel the SFT sample."""
    from swift.rlhf_trainers.utils import encode_sample

    arch, tok, template, engine, path = env
    _, _, sample, _ = _rollout(env, TURNS)
    rl = encode_sample(sample, template)
    sft = template.encode({"messages": [{"role": "user", "content": "<image>What is it?"},
                                        {"role": "assistant", "content": SFT_TEXT}],
                           "images": [str(path)]})
    # GRPO encodes rollouts without the template's trailing "\n" after <|im_end|> (ms-swift
    # sets add_eos=False for sampled responses); everything before it is identical
    n = len(rl["input_ids"])
    assert sft["input_ids"][n:] == tok.encode("\n")
    assert rl["input_ids"] == sft["input_ids"][:n]
    assert torch.equal(rl["image_grid_thw"], sft["image_grid_thw"])
    assert torch.equal(rl["pixel_values"], sft["pixel_values"])
    # trained positions: SFT trains the whole answer, RL the sampled tokens (no vision ones)
    assert rl["labels"] == sft["labels"][:n]


def test_malformed_call_is_told_not_crashed(env):
    arch, tok, template, engine, path = env
    turns = ["<think><tool_call>[200, 10, 100, 50]</tool_call>",
             "<tool_call>[1, 2, three, 4]</tool_call>",
             " so</think><answer>cat</answer>"]
    sched, out, sample, seen = _rollout(env, turns)
    info = out.rollout_infos["crop_tool"]
    assert info["executed"] == 0 and len(info["calls"]) == 2
    assert "swapped corners" in info["calls"][0]["error"]
    assert "non-numeric" in info["calls"][1]["error"]
    text = sample.messages[-1]["content"]
    assert text.count("(crop failed: ") == 2 and VISION_BLOCK not in text
    assert seen["engine_images"] == [1, 1]
    assert len(sample.images) == 1


def test_max_turns_stops_a_call_loop(env):
    turns = ["<tool_call>[10, 20, 200, 180]</tool_call>"] * 6
    sched, out, sample, seen = _rollout(env, turns, max_turns=3)
    assert out.rollout_infos["num_turns"] == 3
    assert out.rollout_infos["crop_tool"]["executed"] == 2  # the third call is not executed


def test_pending_call_rules():
    assert pending_call("a <tool_call>[1, 2, 3, 4]</tool_call>  ", "stop")[0].endswith(
        "</tool_call>")
    assert pending_call("a <tool_call>[1, 2, 3, 4]", "stop") == (
        "a <tool_call>[1, 2, 3, 4]</tool_call>", True)  # an engine that strips the stop string
    assert pending_call("a <tool_call>[1, 2, 3, 4]", "length") == ("", False)
    assert pending_call("<answer>x</answer>", "stop") == ("", False)
    assert pending_call(None, "stop") == ("", False)


def test_scheduler_refuses_a_stock_template(env):
    from swift.template import get_template

    arch, tok, template, engine, path = env
    stock = get_template(template.processor, template_type=arch)
    with pytest.raises(ValueError, match="needs a crop template"):
        CropToolScheduler(max_turns=3, tokenizer=tok, template=stock)
