"""The CoVT ms-swift glue in-process on the tiny Qwen2.5-VL: model type with heads and tokens,
stage rewriting, loss plumbing and gradients under LoRA and full tuning, head restore,
the target cache and the recipe's commands."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from svp.covt.cache import TargetCache, image_key, split_batch
from svp.covt.compute import aux_factor, covt_losses, thought_positions
from svp.covt.experts import standin_experts
from svp.covt.heads import CovtHeads
from svp.covt.tokens import ANCHOR_START, ThoughtConfig
from tests.helpers import REPO, load_entry, offline_env

ENV = {"SVP_COVT_BACKEND": "standin", "SVP_COVT_EXPERTS": "sam,depth",
       "SVP_COVT_SCHEDULE": "reasoning"}


@pytest.fixture
def covt_env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SVP_COVT_CACHE", raising=False)


def scene(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (84, 112, 3),
                                                                  dtype=np.uint8))


def row(q="<image>\nWhat shape is this?", a="A red circle.", image=True):
    out = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    if image:
        out["images"] = [scene()]
    return out


def make_template(processor, model):
    from swift.template import get_template

    template = get_template(processor, template_type="qwen2_5_vl_covt")
    template.set_mode("train")
    template.model = model
    return template


@pytest.fixture
def loaded(covt_env, tiny_model):
    from swift.model import get_model_processor

    load_entry("covt")
    model, processor = get_model_processor(str(tiny_model("qwen2_5_vl")),
                                           model_type="covt_qwen2_5_vl")
    return model, processor, make_template(processor, model)


def test_entry_imports_twice_without_double_registration(covt_env):
    code = ("import runpy; from svp.covt.swift_plugin import register; register(); "
            "runpy.run_path('plugins/covt.py'); runpy.run_path('plugins/covt.py'); "
            "from swift.model.register import MODEL_MAPPING; "
            "from swift.callbacks import callbacks_map; "
            "assert 'covt_qwen2_5_vl' in MODEL_MAPPING and 'covt_stage' in callbacks_map; "
            "assert MODEL_MAPPING['covt_qwen2_5_vl'].is_multimodal")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=offline_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_model_type_adds_heads_and_tokens(loaded):
    model, processor, _ = loaded
    tok = processor.tokenizer
    for t in ThoughtConfig.parse("sam,depth").new_tokens():
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id
    assert tok.convert_tokens_to_ids("<|sam_pad|>") < model.get_input_embeddings().weight.shape[0]
    assert isinstance(model.covt_heads, CovtHeads)
    assert set(model.covt_heads.heads) == {"sam", "depth"}
    assert any(k.startswith("covt_heads.") for k in model.state_dict())


def test_rows_are_staged_by_the_schedule(loaded, monkeypatch, tmp_path):
    _, processor, template = loaded
    decode = processor.tokenizer.decode
    text = decode(template.encode(row())["input_ids"])
    assert "<think> Because the segmentation of the image is <|anchor_start|>" in text
    assert text.count("<|sam_pad|>") == 8 and text.count("<|depth_pad|>") == 4
    # the stage follows the clock the covt_stage callback publishes
    monkeypatch.setenv("SVP_COVT_SCHEDULE", "understanding@0,generation@5")
    template = make_template(processor, template.model)  # settings are read per template
    clock = tmp_path / "step"
    template.clock_path = str(clock)
    clock.write_text("0")
    enc = template.encode(row())
    prompt = decode([t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True)
                     if lab == -100])
    assert "<|anchor_start|><|sam_pad|>" in prompt and "A red circle." in decode(enc["input_ids"])
    assert enc["covt"]["stage"] == "understanding"
    clock.write_text("7")
    enc = template.encode(row())
    assert "What is the segmentation, depth map of the image?" in decode(enc["input_ids"])
    assert enc["covt"]["stage"] == "generation"
    # hand-staged rows, text-only rows and inference requests are left alone
    hand = "<think>" + ANCHOR_START + "<|depth_pad|>" * 4 + "<|anchor_end|></think> x"
    enc = template.encode(row(a=hand))
    assert decode(enc["input_ids"]).count("<|depth_pad|>") == 4 and "sam_pad" not in decode(
        enc["input_ids"])
    assert "covt" not in template.encode(row(q="What is 2+2?", a="4", image=False))
    template.set_mode("pt")
    assert "anchor" not in decode(template.encode(
        {"messages": [{"role": "user", "content": "<image>hi"}], "images": [scene()]}
    )["input_ids"])


def test_training_rows_keep_the_first_pair_as_upstream(loaded, monkeypatch):
    """Upstream's data.py stops at the second question/answer pair: a multi-turn row trains
    its first pair only, and the picture tagged in a dropped turn goes too
    (SVP_COVT_TURNS=first, the default); `all` keeps every turn."""
    _, processor, template = loaded
    decode = processor.tokenizer.decode
    two = {"messages": [{"role": "user", "content": "<image>What shape is this?"},
                        {"role": "assistant", "content": "A red circle."},
                        {"role": "user", "content": "<image>And this one?"},
                        {"role": "assistant", "content": "A square."}],
           "images": [scene(0), scene(1)]}
    enc = template.encode(copy.deepcopy(two))
    text = decode(enc["input_ids"])
    assert "A red circle." in text and "And this one?" not in text and "A square." not in text
    assert len(enc["image_grid_thw"]) == 1
    monkeypatch.setenv("SVP_COVT_TURNS", "all")
    every = make_template(processor, template.model)  # settings are read per template
    enc = every.encode(copy.deepcopy(two))
    assert "A square." in decode(enc["input_ids"]) and len(enc["image_grid_thw"]) == 2


def test_upstream_frame_is_data_py_text(loaded, monkeypatch, tmp_path):
    """``--template qwen2_5_vl_covt_upstream`` (the recipe's FRAME=upstream) writes CoVT's
    data.py frame: system, user and answer each end '\n<|im_end|>\n', the answer's part
    (its final newline included) is what is trained."""
    from swift.template import get_template

    model, processor, _ = loaded
    monkeypatch.setenv("SVP_COVT_SCHEDULE", "understanding")
    template = get_template(processor, template_type="qwen2_5_vl_covt_upstream")
    template.set_mode("train")
    template.model = model
    enc = template.encode(row())
    decode = processor.tokenizer.decode
    text = decode(enc["input_ids"])
    n = text.count("<|image_pad|>")
    cfg = ThoughtConfig.parse("sam,depth")
    assert text == ("<|im_start|>system\nYou are a helpful assistant.\n<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * n
                    + "<|vision_end|>" + cfg.thought() + "What shape is this?\n<|im_end|>\n"
                    "<|im_start|>assistant\nA red circle.\n<|im_end|>\n")
    trained = decode([t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True)
                      if lab != -100])
    assert trained == "A red circle.\n<|im_end|>\n"


def test_reasoning_tags_are_added_tokens_as_upstream(loaded):
    """Upstream's train.py adds <think> </think> <answer> </answer> as tokens (rows trained
    with the thought tokens'); a reasoning row then holds each tag as one id."""
    from svp.common.swift_new_rows import ATTR
    from svp.covt.tokens import TAG_TOKENS

    model, processor, template = loaded
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids(list(TAG_TOKENS))
    assert all(i != tok.unk_token_id and i is not None for i in ids)
    assert set(ids) <= set(getattr(model, ATTR))  # what --tuner_type lora_new_rows trains
    enc = template.encode(row())  # ENV's schedule: reasoning
    assert all(enc["input_ids"].count(i) == 1 for i in ids)


def test_upstream_resize_squashes_the_models_picture_only(loaded, monkeypatch):
    """SVP_COVT_RESIZE=448: the model's training picture is upstream's 448 x 448 (256 merged
    patches) whatever its shape; the experts still get the original; default keeps the shape."""
    model, processor, template = loaded
    wide = {"messages": row()["messages"],
            "images": [Image.fromarray(np.full((210, 560, 3), 90, np.uint8))]}
    kept = template.encode(copy.deepcopy(wide))
    assert kept["image_grid_thw"].tolist() != [[1, 32, 32]]
    monkeypatch.setenv("SVP_COVT_RESIZE", "448")
    enc = make_template(processor, model).encode(copy.deepcopy(wide))
    assert enc["image_grid_thw"].tolist() == [[1, 32, 32]]
    assert processor.tokenizer.decode(enc["input_ids"]).count("<|image_pad|>") == 256
    assert enc["covt"]["image"].size == (560, 210)


@pytest.mark.parametrize("tuner", ["lora", "full"])
def test_heads_receive_gradients_experts_none(loaded, tuner):
    model, _, template = loaded
    if tuner == "lora":
        from peft import LoraConfig, get_peft_model

        # CAUSAL_LM, as ms-swift builds it: peft then calls the inner model's .forward directly
        # (no module hooks run), so the heads must run inside that forward, not in a hook
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4,
                                                 target_modules=["q_proj", "v_proj"],
                                                 modules_to_save=["covt_heads"]))
    batch = template.data_collator([template.encode(row()), template.encode(row())])
    out = template.compute_sft_loss(model, batch)
    plain = model(**{k: v for k, v in batch.items() if k not in ("covt", "text_position_ids")})
    assert out.loss > plain.loss  # the expert losses were added
    out.loss.backward()
    heads = [(n, p) for n, p in model.named_parameters() if "covt_heads" in n and p.requires_grad]
    if tuner == "lora":
        assert heads and all("modules_to_save" in n for n, _ in heads)
    for expert in ("sam", "depth"):  # upstream's depth head never trained under LoRA
        grads = [p.grad for n, p in heads if f"heads.{expert}." in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), expert
    for expert in standin_experts(ThoughtConfig.parse("sam,depth")).values():
        assert all(p.grad is None for m in vars(expert).values()
                   if isinstance(m, torch.nn.Module) for p in m.parameters())


def test_heads_restored_from_a_checkpoint_and_mismatch_refused(covt_env, tiny_model, tmp_path,
                                                              monkeypatch):
    from swift.model import get_model_processor

    load_entry("covt")

    base = tiny_model("qwen2_5_vl")
    model, processor = get_model_processor(str(base), model_type="covt_qwen2_5_vl")
    with torch.no_grad():
        for p in model.covt_heads.parameters():
            p.add_(1.0)
    ckpt = tmp_path / "ckpt"  # a full-tuning checkpoint, saved the way the trainer saves it
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:  # the heads sit beside it
        assert not [k for k in f.keys() if k.startswith("covt_heads.")]
    assert (ckpt / "covt" / "heads.safetensors").is_file()
    again, _ = get_model_processor(str(ckpt), model_type="covt_qwen2_5_vl")
    for (n, a), b in zip(model.covt_heads.state_dict().items(),
                         again.covt_heads.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    monkeypatch.setenv("SVP_COVT_EXPERTS", "sam:4,depth")
    with pytest.raises(ValueError, match="other settings \\(counts: saved '8,4', now '4,4'\\)"):
        get_model_processor(str(ckpt), model_type="covt_qwen2_5_vl")


def test_positions_and_incomplete_groups():
    ids = torch.tensor([[1, 7, 7, 7, 2], [7, 7, 3, 7, 7], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    rows, pos, short = thought_positions(ids, 7, 3)
    assert rows == [0, 1] and pos.tolist() == [[1, 2, 3], [0, 1, 3]] and short == [2]
    experts = standin_experts(ThoughtConfig.parse("depth"))
    heads = CovtHeads(16, experts)
    t = split_batch(experts["depth"].targets([scene(0), scene(1)]), 2)
    hidden = torch.randn(2, 6, 16)
    ids = torch.tensor([[5, 9, 9, 9, 9, 0], [5, 9, 9, 0, 0, 0]])  # second group cut short
    res = covt_losses(hidden, ids, {"depth": 9}, heads, experts,
                      [{"depth": t[0]}, {"depth": t[1]}])
    assert res.samples["depth"] == 1 and sum(res.skipped.values()) == 1
    assert "incomplete token group" in next(iter(res.skipped))


def test_aux_factor_matches_the_trainers_lm_scaling():
    assert aux_factor(True, 4, False, 1) == 0.25      # LM loss already a share of the window
    assert aux_factor(False, 4, False, 1) == 1.0      # trainer divides by the steps itself
    assert aux_factor(True, 2, True, 8) == 1 / 16     # trainer multiplies by world size


def test_target_cache_roundtrip_meta_and_resume(tmp_path):
    experts = standin_experts(ThoughtConfig.parse("sam,depth"))
    fp = {n: e.fingerprint() for n, e in experts.items()}
    with pytest.raises(FileNotFoundError, match="cache_expert_targets"):
        TargetCache(tmp_path / "c", fp).check_meta(create=False)
    cache = TargetCache(tmp_path / "c", fp, "full")
    cache.check_meta(create=True)
    im = scene(3)
    key = image_key(im)
    assert key == image_key(im.convert("RGBA").convert("RGB")) != image_key(scene(4))
    per = {n: split_batch(e.targets([im]), 1)[0] for n, e in experts.items()}
    everything = {n: e.keys for n, e in experts.items()}
    binary = {n: e.binary for n, e in experts.items()}
    assert not cache.has(key, {"sam": everything["sam"]}) and cache.load(key, ["sam"]) is None
    cache.save(key, {"sam": per["sam"]}, binary)
    assert cache.has(key, {"sam": everything["sam"]}) and not cache.has(key, everything)
    cache.save(key, {"depth": per["depth"]}, binary)
    back = cache.load(key, ["sam", "depth"])
    for n in per:
        for k, v in per[n].items():
            assert back[n][k].shape == v.shape
            assert torch.allclose(back[n][k].float(), v.float(), atol=2e-3, rtol=1e-3), (n, k)
    assert torch.equal(back["sam"]["masks"], per["sam"]["masks"])  # bits: exact
    other = dict(fp, sam="StandInSam:2:sam:8")
    with pytest.raises(ValueError, match="made with other experts"):
        TargetCache(tmp_path / "c", other).check_meta(create=False)
    with pytest.raises(ValueError, match="holds 'full' entries, not 'compact'"):
        TargetCache(tmp_path / "c", fp, "compact").check_meta(create=True)


def test_old_format_caches_are_refused(tmp_path):
    """A cache of the first format (meta without ``format``, every target in fp16) is refused
    with what to do, by the tool and by training alike."""
    import json

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "meta.json").write_text(json.dumps({"experts": {"sam": "x"}}))
    for create in (True, False):
        with pytest.raises(ValueError, match="older format.*rebuild"):
            TargetCache(tmp_path / "c", {}).check_meta(create=create)


def test_bits_round_trip_and_refuse_other_values():
    from svp.covt.cache import pack_bits, unpack_bits

    t = (torch.rand(3, 5, 7) > 0.5).float()
    packed, spec = pack_bits(t)
    assert packed.numel() == (3 * 5 * 7 + 7) // 8 and spec == "bits:3x5x7"
    assert torch.equal(unpack_bits(packed, spec), t)
    with pytest.raises(ValueError, match="0/1"):
        pack_bits(torch.tensor([0.0, 0.5]))


def test_compact_entries_complete_to_the_full_targets(tmp_path):
    """A compact entry holds SAM's searched masks only; completing it (the embedding
    recomputed) gives exactly the targets computed from scratch, for every expert."""
    from svp.covt.cache import stored_keys

    experts = standin_experts(ThoughtConfig.parse("sam,depth,dino"))
    cache = TargetCache(tmp_path / "c", {n: e.fingerprint() for n, e in experts.items()})
    cache.check_meta(create=True)
    assert cache.contents == "compact"
    ims = [scene(5), scene(6)]
    for im in ims:
        full = {n: split_batch(e.targets([im]), 1)[0] for n, e in experts.items()}
        cache.save(image_key(im), {n: {k: full[n][k] for k in stored_keys(e, "compact")}
                                   for n, e in experts.items()},
                   {n: e.binary for n, e in experts.items()})
    entries = [cache.load(image_key(im), list(experts)) for im in ims]
    assert set(entries[0]["sam"]) == {"masks", "n_masks"} and entries[0]["depth"] == {}
    for name, e in experts.items():
        want = e.targets(ims)
        if not e.searched:
            continue
        got = e.complete(ims, [en[name] for en in entries])
        assert set(got) == set(want) == set(e.keys)
        for k in want:
            assert torch.equal(got[k].to(want[k].dtype), want[k]), (name, k)


def test_cache_tool_resumes_and_shards(tmp_path):
    from data_tools import cache_expert_targets as tool

    (tmp_path / "im").mkdir()
    rows = []
    for i in range(5):
        scene(i).save(tmp_path / "im" / f"{i}.png")
        rows.append({"image": f"im/{i}.png", "conversations": []})
    rows.append({"image": "im/missing.png", "conversations": []})
    rows.append({"conversations": []})
    ds = tmp_path / "d.json"
    import json

    ds.write_text(json.dumps(rows))
    args = ["--dataset", str(ds), "--image_root", str(tmp_path), "--cache", str(tmp_path / "c"),
            "--experts", "sam,depth", "--backend", "standin", "--num_shards", "2"]
    assert tool.main(args + ["--shard_index", "0"]) == 0
    assert len(list((tmp_path / "c").glob("*/*.safetensors"))) == 3
    assert tool.main(args + ["--shard_index", "1"]) == 0
    assert len(list((tmp_path / "c").glob("*/*.safetensors"))) == 5
    assert tool.main(args[:-2]) == 0  # everything cached: nothing recomputed
    entries = list((tmp_path / "c").glob("*/*.safetensors"))
    assert max(p.stat().st_size for p in entries) < 2048  # compact: SAM's packed masks
    with pytest.raises(SystemExit):
        tool.main(args + ["--shard_index", "2"])


def test_recipe_dry_run_chains_runs_and_merges(tmp_path):
    env = offline_env(DATA="d.jsonl", DRY_RUN="1", WORK_DIR=str(tmp_path / "w"),
                      RUNS="understanding:40 generation@0,reasoning@30:60:50",
                      SVP_COVT_BACKEND="standin")
    r = subprocess.run(["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cmds = [ln for ln in r.stdout.splitlines() if ln.startswith("+ ")]
    assert len(cmds) == 4
    assert "SVP_COVT_SCHEDULE=understanding" in cmds[0] and "--max_steps 40" in cmds[0]
    assert "--callbacks covt_stage" in cmds[0]
    # upstream: only the new tokens' rows train (TRAIN_NEW_ROWS=1, the default)
    assert "--tuner_type lora_new_rows" in cmds[0] and "--modules_to_save covt_heads --" in cmds[0]
    whole = subprocess.run(["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")],
                           env=dict(env, TRAIN_NEW_ROWS="all"), capture_output=True, text=True)
    assert "--tuner_type lora " in whole.stdout
    assert "--modules_to_save covt_heads embed_tokens lm_head" in whole.stdout
    assert "merge_lora true" in cmds[1] and "run1_understanding_merged" in cmds[1]
    assert "--model " + str(tmp_path / "w" / "run1_understanding_merged") in cmds[2]
    assert "SVP_COVT_SCHEDULE=generation@0,reasoning@30" in cmds[2]
    assert "SVP_COVT_AUX_UNTIL=50" in cmds[2]
    bad = subprocess.run(["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")],
                         env=dict(env, RUNS="understanding:x"), capture_output=True, text=True)
    assert bad.returncode == 2 and "bad RUNS entry" in bad.stderr
    # the settings are checked before anything runs: real experts need their checkpoints
    real = subprocess.run(["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")],
                          env=dict(env, SVP_COVT_BACKEND="real"), capture_output=True, text=True)
    assert real.returncode == 2 and "SVP_COVT_SAM_CKPT is unset" in real.stderr
    assert not [ln for ln in real.stdout.splitlines() if ln.startswith("+ ")]
    assert os.path.exists(REPO / "plugins" / "covt.py")


@pytest.mark.parametrize("flag", ["packing", "padding_free"])
def test_packed_or_padding_free_batches_are_refused(loaded, flag):
    """A packed row holds several samples; CoVT reads one image and one thought group per
    row, so it would supervise only the first: refused at encoding, before training."""
    _, _, template = loaded
    setattr(template, flag, True)
    with pytest.raises(ValueError, match="CoVT cannot train on packed or padding-free"):
        template.encode(row())


def test_sam_empty_rule_reaches_the_experts():
    from svp.covt import settings
    from svp.covt.swift_plugin import _experts

    env = {"SVP_COVT_BACKEND": "standin", "SVP_COVT_EXPERTS": "sam,depth"}
    assert _experts(settings.load(env))["sam"].empty_masks == "zero"  # upstream by default
    chosen = _experts(settings.load({**env, "SVP_COVT_SAM_EMPTY": "background"}))
    assert chosen["sam"].empty_masks == "background"


def test_recipe_default_schedule_is_upstreams_two_runs(tmp_path):
    """With RUNS unset the recipe runs upstream's finetune.sh + run.sh: understanding for
    6000 steps, merge, then generation / reasoning from 3000 / efficient from 6000 over 10000
    steps with the expert losses off from step 8000, merge."""
    env = offline_env(DATA="d.jsonl", DRY_RUN="1", WORK_DIR=str(tmp_path / "w"),
                      SVP_COVT_BACKEND="standin")
    r = subprocess.run(["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cmds = [ln for ln in r.stdout.splitlines() if ln.startswith("+ ")]
    assert len(cmds) == 4  # two runs, two merges
    assert "SVP_COVT_SCHEDULE=understanding SVP_COVT_AUX_UNTIL= " in cmds[0]
    assert "--max_steps 6000" in cmds[0] and "--optimizer covt" in cmds[0]
    assert ("SVP_COVT_SCHEDULE=generation@0,reasoning@3000,efficient@6000 "
            "SVP_COVT_AUX_UNTIL=8000 ") in cmds[2]
    assert "--max_steps 10000" in cmds[2]
    assert str(tmp_path / "w" / "run2_generation_merged") in cmds[3]
    assert "--template qwen2_5_vl_covt " in cmds[0]  # FRAME=qwen: the frame it is served in
    up = subprocess.run(["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")],
                        env=dict(env, FRAME="upstream"), capture_output=True, text=True,
                        timeout=60)
    assert "--template qwen2_5_vl_covt_upstream " in up.stdout
    bad = subprocess.run(["bash", str(REPO / "recipes" / "covt_qwen25vl_7b.sh")],
                         env=dict(env, FRAME="x"), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "FRAME=x" in bad.stderr
