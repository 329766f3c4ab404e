"""CoVT building blocks with the stand-in experts: tokens and stage texts, heads, losses."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from svp.covt import losses as L
from svp.covt.experts import standin_experts
from svp.covt.heads import CovtHeads
from svp.covt.tokens import ANCHOR_END, ANCHOR_START, Schedule, ThoughtConfig, build_turn

ALL = "sam,depth,dino,pidinet,siglip,metaclip"


def images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = np.zeros((96, 128, 3), np.uint8)
        for _ in range(4):  # a few coloured rectangles: structure for the experts to see
            x, y = rng.integers(0, 100), rng.integers(0, 70)
            a[y:y + rng.integers(10, 40), x:x + rng.integers(10, 50)] = rng.integers(0, 255, 3)
        out.append(Image.fromarray(a))
    return out


# ----------------------------------------------------------------------------- tokens
def test_thought_config_parsing():
    cfg = ThoughtConfig.parse("sam,depth,dino")
    assert cfg.experts == ("sam", "depth", "dino") and cfg.counts == (8, 4, 4)
    assert ThoughtConfig.parse("sam:16 pidinet").counts == (16, 4)
    assert cfg.new_tokens() == [ANCHOR_START, ANCHOR_END, "<|sam_pad|>", "<|depth_pad|>",
                                "<|dino_pad|>"]
    assert cfg.thought() == (ANCHOR_START + "<|sam_pad|>" * 8 + ANCHOR_END + ANCHOR_START
                             + "<|depth_pad|>" * 4 + ANCHOR_END + ANCHOR_START
                             + "<|dino_pad|>" * 4 + ANCHOR_END)
    for bad, msg in [("sam,clip", "unknown visual expert 'clip'"), ("sam,sam", "twice"),
                     ("sam:0", "1..256"), ("sam:x", "bad token count"), ("", "no visual")]:
        with pytest.raises(ValueError, match=msg):
            ThoughtConfig.parse(bad)


def test_stage_texts_follow_upstream():
    """Upstream's data.py, written out: the newlines around <image> dropped and the thought
    tokens right after <|vision_end|> (add_anchor_pad), the question straight after them; the
    reasoning answer '<think> Because ... . ' + ' </think>' (two spaces before </think>)."""
    cfg = ThoughtConfig.parse("sam,depth")
    q, a = "<image>\nHow many cars?", "3"
    expected = ("<image>" + cfg.thought() + "How many cars?", "3")
    assert build_turn("understanding", q, a, cfg) == expected
    assert build_turn("generation", q, a, cfg) == (
        "<image>What is the segmentation, depth map of the image?", cfg.thought())
    user, ans = build_turn("reasoning", q, a, cfg)
    assert user == "<image>How many cars?" and ans == (
        f"<think> Because the segmentation of the image is {cfg.group('sam')}, and the depth "
        f"map of the image is {cfg.group('depth')}.  </think>\n<answer> 3 </answer>")
    rng = random.Random(0)
    outs = [build_turn("efficient", q, a, cfg, rng)[1] for _ in range(600)]
    plain = sum(o == "3" for o in outs)
    assert 60 < plain < 140  # one in six
    assert all(o == "3" or o.startswith("<think> Because") for o in outs)
    assert any("depth" in o and "segmentation" not in o for o in outs)
    with pytest.raises(ValueError, match="unknown CoVT stage"):
        build_turn("dreaming", q, a, cfg)


def test_schedule_is_a_function_of_the_global_step():
    s = Schedule.parse("understanding@0,generation@2,reasoning@4,efficient@6", aux_until=8)
    assert [s.stage(i) for i in range(8)] == ["understanding"] * 2 + ["generation"] * 2 + [
        "reasoning"] * 2 + ["efficient"] * 2
    assert s.aux_on(7) and not s.aux_on(8) and s.multi_stage
    fixed = Schedule.parse("reasoning")
    assert not fixed.multi_stage and fixed.stage(10**6) == "reasoning" and fixed.aux_on(10**6)
    paper = Schedule.parse(None, aux_until=15000)
    assert [paper.stage(i) for i in (0, 3999, 4000, 7000, 10000)] == [
        "understanding", "understanding", "generation", "reasoning", "efficient"]
    for bad in ("generation@5,reasoning@4", "reasoning@3", "dreaming", "sam@x"):
        with pytest.raises(ValueError):
            Schedule.parse(bad)


# ----------------------------------------------------------------------------- heads + losses
@pytest.fixture(scope="module")
def setup():
    cfg = ThoughtConfig.parse(ALL)
    experts = standin_experts(cfg)
    imgs = images(2)
    targets = {n: e.targets(imgs) for n, e in experts.items()}
    return cfg, experts, targets


def sam_floor(ex, t) -> float:
    """The best a SAM prediction can score here: each kept mask decoded from the hidden prompt
    that made it, the spare tokens pointing away from every pixel (BCE at the soft mask edges
    and dice on probabilities keep this above 0)."""
    best = []
    for b in range(t["embed"].shape[0]):
        n = int(t["n_masks"][b])
        cand = ex._logits(ex.hidden_prompts[None], t["embed"][b:b + 1])[0] > 0
        prompts = [ex.hidden_prompts[next(i for i in range(len(cand))
                                          if torch.equal(cand[i], t["masks"][b, j].bool()))]
                   for j in range(n)]
        away = -torch.nn.functional.normalize(t["embed"][b].mean((1, 2)), dim=0)
        best.append(torch.stack(prompts + [away] * (ex.n_tokens - n)))
    return L.sam_loss(ex.decode(torch.stack(best), t), t["masks"], t["n_masks"]).item()


@pytest.mark.parametrize("name", ALL.split(","))
def test_optimising_only_the_token_states_drives_the_loss_to_zero(setup, name):
    """Heads frozen at init, experts frozen: gradient descent on the hidden states alone
    drives each loss down to (near) its optimum; for SAM, the floor computed above."""
    cfg, experts, targets = setup
    torch.manual_seed(0)
    ex, t = experts[name], targets[name]
    heads = CovtHeads(64, {name: ex}).requires_grad_(False)
    h = torch.randn(2, ex.n_tokens, 64, requires_grad=True)
    opt = torch.optim.Adam([h], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800)
    first = None
    for _ in range(800):
        loss = ex.loss(ex.decode(heads(name, h), t), t)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    if name == "sam":
        floor = sam_floor(ex, t)
        assert loss.item() <= 1.1 * floor < 0.2 * first, (first, floor, loss.item())
    else:
        # depth / edge reach ~0; feature experts stop near 8 % of the start, the output range
        # of a cross-attention head frozen at init (trained heads go further)
        assert loss.item() < 0.1 * first, (name, first, loss.item())


def test_sam_loss_ignores_token_order(setup):
    cfg, experts, targets = setup
    t = targets["sam"]
    assert int(t["n_masks"].min()) >= 2  # the stand-in gives real matching work
    logits = torch.randn(2, 8, 32, 32)
    perm = torch.randperm(8)
    assert torch.allclose(L.sam_loss(logits, t["masks"], t["n_masks"]),
                          L.sam_loss(logits[:, perm], t["masks"], t["n_masks"]))
    # a perfect prediction in any order scores only the unmatched-token term
    n = int(t["n_masks"][0])
    perfect = torch.full((1, 8, 32, 32), -20.0)
    perfect[0, :n] = (t["masks"][0, :n] * 40 - 20)
    loss = L.sam_loss(perfect[:, torch.randperm(8)], t["masks"][:1], t["n_masks"][:1])
    assert loss.item() < 1e-3
    # no expert mask: 0 as upstream (kept in the graph, gradient 0), or our background BCE
    logits = torch.zeros(1, 8, 32, 32, requires_grad=True)
    none = L.sam_loss(logits, t["masks"][:1], torch.zeros(1, dtype=torch.long))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None and not logits.grad.any()
    bg = L.sam_loss(torch.zeros(1, 8, 32, 32), t["masks"][:1], torch.zeros(1, dtype=torch.long),
                    empty="background")
    assert bg.item() == pytest.approx(np.log(2), rel=1e-4)  # BCE of all tokens to 0


def test_sam_dice_smoothing_is_upstreams():
    """dice_coeff's eps 1e-6: a 1-pixel mask fully predicted has dice ~1, half-missed ~2/3
    (eps 1.0 would read 1 and 0.75 there, and move the matching on small masks)."""
    gt = torch.zeros(1, 4, 4)
    gt[0, 0, 0] = 1
    assert L.dice_scores(gt.clone(), gt).item() == pytest.approx(1.0, abs=1e-5)
    half = torch.zeros(1, 4, 4)
    half[0, 0, 0] = half[0, 3, 3] = 1
    assert L.dice_scores(half, gt).item() == pytest.approx(2 / 3, abs=1e-5)


def test_no_gradient_reaches_any_expert_and_heads_get_one(setup):
    cfg, experts, targets = setup
    heads = CovtHeads(64, experts)
    h = torch.randn(2, 8, 64)
    total = 0
    for name, ex in experts.items():
        total = total + ex.loss(ex.decode(heads(name, h[:, : ex.n_tokens]), targets[name]),
                                targets[name])
    total.backward()
    for name, ex in experts.items():
        assert all(not p.requires_grad and p.grad is None for p in ex.backbone.parameters())
        assert all(not v.requires_grad for v in targets[name].values())
        grads = [p.grad for p in heads.heads[name].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_shape_mismatch_is_an_error_not_a_broadcast():
    with pytest.raises(ValueError, match=r"depth: prediction \(2, 1, 32, 32\) vs target"):
        L.l1_loss(torch.zeros(2, 1, 32, 32), torch.zeros(2, 32, 32), "depth")


def test_targets_are_deterministic_and_cacheable(setup):
    cfg, experts, targets = setup
    again = {n: e.targets(images(2)) for n, e in standin_experts(cfg).items()}
    for name in targets:
        for key in targets[name]:
            assert torch.equal(targets[name][key], again[name][key]), (name, key)


@pytest.mark.parametrize("k", [16, 17])
def test_sam_positions_are_upstreams_rope(k):
    """The default SAM token positions are upstream's rotation: feature i and i + K/2 of
    token n form a complex number turned by n * 10000^(-2i / K) (written here with complex
    arithmetic, in float64), the norm of every token kept; an odd width rotates with a zero
    feature appended and drops it."""
    from svp.covt.heads import rope_over_tokens

    x = torch.randn(3, 8, k, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (0, k % 2))
    half = padded.shape[-1] // 2
    z = torch.complex(padded[..., :half], padded[..., half:])
    theta = 10000.0 ** (-2 * torch.arange(half, dtype=torch.float64) / padded.shape[-1])
    turned = z * torch.polar(torch.ones(8, half, dtype=torch.float64),
                             torch.arange(8, dtype=torch.float64)[:, None] * theta)
    want = torch.cat([turned.real, turned.imag], -1)[..., :k]
    got = rope_over_tokens(x)
    assert torch.allclose(got, want, atol=1e-12)
    if k % 2 == 0:
        assert torch.allclose(got.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(got[:, 0], x[:, 0])  # token 0 is not turned


def test_sam_positions_setting_reaches_the_head_and_the_saved_heads(tmp_path):
    """SVP_COVT_SAM_POSITIONS picks the SAM head's encoding (the two give different
    outputs from the same weights); heads saved under one are refused under the other."""
    from svp.covt import settings
    from svp.covt.swift_plugin import _check_heads_meta, _write_heads

    experts = standin_experts(ThoughtConfig.parse("sam"))
    torch.manual_seed(0)
    rope = CovtHeads(64, experts)
    additive = CovtHeads(64, experts, sam_positions="additive")
    additive.load_state_dict(rope.state_dict())
    h = torch.randn(2, experts["sam"].n_tokens, 64)
    assert rope.heads["sam"].positions == "rope"
    assert not torch.allclose(rope("sam", h), additive("sam", h))
    with pytest.raises(ValueError, match="unknown token positions"):
        CovtHeads(64, experts, sam_positions="learned")
    env = {"SVP_COVT_BACKEND": "standin", "SVP_COVT_EXPERTS": "sam"}
    path = _write_heads(tmp_path, dict(rope.heads.state_dict()), settings.load(env))
    _check_heads_meta(path, settings.load(env))
    with pytest.raises(ValueError, match="sam_positions: saved 'rope', now 'additive'"):
        _check_heads_meta(path, settings.load({**env, "SVP_COVT_SAM_POSITIONS": "additive"}))
