"""NEO's conversion, forward, loss and generation on the tiny NEO built from the tiny Qwen3:
conversion tensor by
tensor, equivalence with Qwen3, the weighted loss, the PT gradient set, text-only batches,
incremental and batched decoding, save/reload."""

from __future__ import annotations

import math

import pytest
import torch

from svp.neo.convert import hw_query_from_q
from svp.neo.freeze import pt_trainable
from svp.neo.loss import sample_weights, weighted_lm_loss

E = 2


@pytest.fixture(scope="module")
def qwen3(tiny_model):
    from transformers import AutoModelForCausalLM

    path = tiny_model("qwen3")
    return path, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def neo(path):
    from svp.neo.modeling import NEOChatModel

    model = NEOChatModel.from_pretrained(path, dtype=torch.float32).eval()
    model.attn_backend = "sdpa"
    return model


def test_conversion_tensor_by_tensor(qwen3, tiny_neo):
    _, base = qwen3
    model = neo(tiny_neo(E))
    cfg = model.config.llm_config
    assert cfg.num_hidden_layers == E + base.config.num_hidden_layers
    assert len(cfg.layer_types) == cfg.num_hidden_layers
    b = base.state_dict()
    n = model.state_dict()
    for key, value in b.items():
        if key.startswith("model.layers."):
            i, rest = key[len("model.layers."):].split(".", 1)
            mine = n[f"language_model.model.layers.{int(i) + E}.{rest}"]
        else:
            mine = n[f"language_model.{key}"]
        assert torch.equal(mine, value), key
    d = cfg.head_dim
    for i in range(E, cfg.num_hidden_layers):
        attn = model.language_model.model.layers[i].self_attn
        q = attn.q_proj.weight.view(cfg.num_attention_heads, 4, d // 4, -1)
        hw = attn.q_proj_hw.weight.view(cfg.num_attention_heads, 4, d // 4, -1)
        for slot, quarter in enumerate((0, 2, 0, 2)):  # [Q1, Q3, Q1, Q3]
            assert torch.equal(hw[:, slot], q[:, quarter])
        assert not attn.k_proj_hw.weight.any()
        for name in ("q_norm_h", "q_norm_w", "k_norm_h", "k_norm_w"):
            assert torch.equal(getattr(attn, name).weight, torch.ones(d // 2))
    for i in range(E):
        attn = model.language_model.model.layers[i].self_attn
        for name in ("q_proj", "k_proj_hw", "v_proj"):
            assert abs(getattr(attn, name).weight.std().item() - 0.02) < 0.004
        assert torch.equal(attn.q_norm.weight, torch.ones(d))
    lm = model.language_model
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()  # tied


def test_hw_query_quarters_by_hand():
    q = torch.arange(2 * 8 * 3, dtype=torch.float32).view(16, 3)  # 2 heads, head_dim 8
    got = hw_query_from_q(q, 2, 8).view(2, 8, 3)
    rows = q.view(2, 8, 3)
    for h in range(2):
        want = torch.cat((rows[h, 0:2], rows[h, 4:6], rows[h, 0:2], rows[h, 4:6]))
        assert torch.equal(got[h], want)


def test_tokens_at_neo_ids(tiny_neo):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_neo(E))
    assert tok.convert_tokens_to_ids(["<IMG_CONTEXT>", "<img>", "</img>", "<|interpreter|>"]) \
        == [151669, 151670, 151671, 151681]
    assert len(tok) == 151682


def test_extra_layers_zero_reproduces_qwen3_even_with_hw_positions(qwen3, tiny_neo):
    from svp.neo.mask import dense_mask
    from svp.neo.modeling import NativeRope

    _, base = qwen3
    model = neo(tiny_neo(0))
    ids = torch.randint(0, 1900, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = base(ids).logits
        got = model(ids).logits
        assert (got - want).abs().max().item() <= 1e-5
        t = torch.arange(40).expand(2, 40)
        h, w = torch.randint(0, 50, (2, 2, 40)).unbind(0)
        zeros = torch.zeros_like(ids)
        rope_ = NativeRope.build(model.config.llm_config, t, h, w, torch.float32)
        hidden, _ = model.language_model.model(model.get_input_embeddings()(ids), rope_,
                                               dense_mask(zeros, zeros))
        shuffled = model.language_model.lm_head(hidden)
    assert (shuffled - want).abs().max().item() <= 1e-5


def test_loss_equals_hand_computation_for_each_reduction(tiny_neo):
    model = neo(tiny_neo(E))
    g = torch.Generator().manual_seed(1)
    lens, sup = [12, 7, 9], [5, 2, 6]
    ids = torch.randint(0, 1900, (1, sum(lens)), generator=g)
    labels, bounds = [], [0]
    for n, s in zip(lens, sup, strict=True):
        labels += [-100] * (n - s) + ids[0, bounds[-1] + n - s:bounds[-1] + n].tolist()
        bounds.append(bounds[-1] + n)
    labels = torch.tensor([labels])
    with torch.no_grad():
        logits = model(ids, seq_boundaries=torch.tensor(bounds)).logits[0].double()
    logp = logits.log_softmax(-1)
    losses = {}
    for red in ("token", "sample", "square"):
        w = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            w += sample_weights(labels[0, a:b].tolist(), red)
        num = den = 0.0
        for i in range(1, labels.shape[1]):  # position i - 1 predicts label i (one shift)
            if labels[0, i] != -100:
                num += w[i] * -logp[i - 1, labels[0, i]].item()
                den += w[i]
        with torch.no_grad():
            got = model(ids, labels=labels, loss_weight=torch.tensor([w]),
                        seq_boundaries=torch.tensor(bounds)).loss.item()
        assert got == pytest.approx(num / den, rel=1e-5), red
        losses[red] = got
    assert len({round(v, 6) for v in losses.values()}) == 3
    assert sample_weights([-100, 3, 4, 5, 6], "square") == [0.0] + [0.5] * 4


def test_labels_equal_to_inputs_are_shifted_once():
    logits = torch.randn(1, 6, 11)
    ids = torch.randint(0, 11, (1, 6))
    want = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert weighted_lm_loss(logits, ids).item() == pytest.approx(want.item(), rel=1e-6)


def _batch(model, n_img_tokens=6):
    cfg = model.config
    g = torch.Generator().manual_seed(2)
    ids = torch.cat((torch.randint(0, 1900, (5,), generator=g),
                     torch.tensor([cfg.img_start_token_id] + [cfg.img_context_token_id]
                                  * n_img_tokens + [cfg.img_end_token_id]),
                     torch.randint(0, 1900, (6,), generator=g)))[None]
    pixels = torch.randn(4 * n_img_tokens, 768, generator=g)
    return ids, pixels, torch.tensor([[4, 6]])


def test_pt_gradients_exactly_on_the_intended_set(tiny_neo):
    model = neo(tiny_neo(E)).train()
    for name, p in model.named_parameters():
        p.requires_grad_(pt_trainable(name, E))
    ids, pixels, grid = _batch(model)
    model(ids, pixels, grid, labels=ids).loss.backward()
    nonzero, zero = set(), set()
    for name, p in model.named_parameters():
        if not pt_trainable(name, E):
            assert p.grad is None, name
            continue
        (nonzero if p.grad.abs().sum() > 0 else zero).add(name)
    assert "language_model.lm_head.weight" not in nonzero | zero
    assert all(n.startswith("language_model.model.layers.") for n in zero)
    for n in nonzero | zero:
        assert pt_trainable(n, E)
    layers = model.config.llm_config.num_hidden_layers
    for i in range(E, layers):  # LLM layers at step 0: only k_proj_hw moves
        pre = f"language_model.model.layers.{i}.self_attn."
        assert pre + "k_proj_hw.weight" in nonzero
        for t in ("q_proj_hw", "q_norm_h", "q_norm_w", "k_norm_h", "k_norm_w"):
            assert pre + t + ".weight" in zero, t
        assert pre + "q_proj.weight" not in nonzero | zero
    vision = {n for n in nonzero if n.startswith("vision_model.")}
    assert len(vision) == 4
    assert all(f"language_model.model.layers.{i}.mlp.up_proj.weight" in nonzero
               for i in range(E))
    assert len(zero) == 5 * (layers - E)


def test_pt_regex_selects_exactly_the_intended_set(tiny_neo):
    """The rule as upstream's README means it, not its substring match (which would train
    ``lm_head``, untied on NEO-9B, and no pre-buffer layer)."""
    from svp.neo.freeze import HW_TENSORS

    model = neo(tiny_neo(E))
    names = [n for n, _ in model.named_parameters()] + ["language_model.lm_head.weight"]
    want = {n for n in names if n.startswith("vision_model.")}
    want |= {n for n in names for i in range(E)
             if n.startswith(f"language_model.model.layers.{i}.")}
    want |= {n for n in names if n.rsplit(".", 2)[-2] in HW_TENSORS}
    assert {n for n in names if pt_trainable(n, E)} == want
    assert not pt_trainable("language_model.lm_head.weight", E)
    assert not pt_trainable("language_model.model.layers.12.mlp.up_proj.weight", 12)
    assert pt_trainable("language_model.model.layers.11.mlp.up_proj.weight", 12)


def test_text_only_batch_keeps_vision_in_the_graph(tiny_neo):
    model = neo(tiny_neo(E)).train()
    ids = torch.randint(0, 1900, (1, 12))
    model(ids, labels=ids).loss.backward()
    for name, p in model.vision_model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0, name


def test_incremental_decode_equals_the_full_forward(tiny_neo):
    model = neo(tiny_neo(E))
    ids, pixels, grid = _batch(model)
    with torch.no_grad():
        logits, cache = model.prefill(ids, None, pixels, grid)
        steps, seq = [logits], ids
        for _ in range(4):
            tok = steps[-1].argmax(-1)
            seq = torch.cat((seq, tok[:, None]), 1)
            steps.append(model.decode_step(tok, cache))
        full = model(seq, pixels, grid).logits[0]
    for k, step in enumerate(steps):
        assert (step[0] - full[ids.shape[1] - 1 + k]).abs().max() < 1e-4, k
    # t continues at max t + k: the first new token is at t = last prompt t + 1
    from svp.neo.positions import t_indexes
    cfg = model.config
    t = t_indexes(seq, cfg.img_start_token_id, cfg.img_context_token_id)[0]
    assert t[ids.shape[1]].item() == t[: ids.shape[1]].max().item() + 1


def test_batched_left_padded_generation_equals_batch_one(tiny_neo):
    model = neo(tiny_neo(E))
    ids_a, pix_a, grid_a = _batch(model, 6)
    ids_b = torch.randint(0, 1900, (1, 7), generator=torch.Generator().manual_seed(5))
    pad = model.generation_config.pad_token_id
    width = ids_a.shape[1]
    batch = torch.full((2, width), pad)
    batch[0] = ids_a[0]
    batch[1, width - 7:] = ids_b[0]
    mask = torch.zeros(2, width, dtype=torch.long)
    mask[0] = 1
    mask[1, width - 7:] = 1
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None)
    one_a = model.generate(ids_a, pixel_values=pix_a, image_grid_hw=grid_a, **kw)
    one_b = model.generate(ids_b, **kw)
    both = model.generate(batch, mask, pix_a, grid_a, **kw)
    assert torch.equal(both[0, width:], one_a[0, ids_a.shape[1]:])
    assert torch.equal(both[1, width:], one_b[0, 7:])


def test_num_return_sequences_repeats_each_rows_images(tiny_neo):
    model = neo(tiny_neo(E))
    ids, pixels, grid = _batch(model)
    kw = dict(max_new_tokens=4, do_sample=False, eos_token_id=None)
    one = model.generate(ids, pixel_values=pixels, image_grid_hw=grid, **kw)
    two = model.generate(ids, pixel_values=pixels, image_grid_hw=grid,
                         num_return_sequences=2, **kw)
    assert two.shape[0] == 2 and torch.equal(two[0], one[0]) and torch.equal(two[1], one[0])


def test_save_reload_round_trip(tiny_neo, tmp_path):
    model = neo(tiny_neo(E))
    ids, pixels, grid = _batch(model)
    model.save_pretrained(tmp_path)
    again = neo(tmp_path)
    assert isinstance(again.config.vision_config.llm_hidden_size, int)
    with torch.no_grad():
        assert torch.equal(model(ids, pixels, grid).logits, again(ids, pixels, grid).logits)
    sd = again.state_dict()
    assert "vision_model.embeddings.dense_embedding.weight" in sd
    assert math.isclose(again.config.vision_config.rope_theta_vision, 1000.0)


def test_vocabulary_grows_through_the_language_model(tiny_neo):
    """ms-swift grows vocabularies through the module holding ``lm_head`` (another plugin's
    tokens, e.g. mask tokens, or ``--new_special_tokens``): NEO's language model forwards the
    resize to the whole model, the head stays tied and the new ids run."""
    from transformers import AutoTokenizer

    from svp.common.vocab import add_tokens

    path = tiny_neo(E)
    model, tok = neo(path), AutoTokenizer.from_pretrained(path)
    new = [f"<|extra_{i}|>" for i in range(300)]
    summary = add_tokens(model.language_model, tok, [(new, False)])
    assert summary["added"] == 300 and summary["rows_after"] == 152064 and summary["tied_head"]
    lm = model.language_model
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    assert model.config.llm_config.vocab_size == 152064
    ids = torch.tensor([tok.convert_tokens_to_ids(new[-3:])])
    assert model(ids).logits.shape == (1, 3, 152064)


def test_a_released_style_config_parses(tmp_path):
    """The fields the released NEO1_0 config.json files carry (transformers 4.5x
    layout): top-level ``rope_theta``, a 32-entry ``layer_types`` for 40 layers, 1-tuples
    in the vision config, remote-code keys; no ``img_end_token_id``."""
    import json

    from svp.neo.configuration import NEOChatConfig

    llm = dict(model_type="qwen3", hidden_size=64, intermediate_size=128, head_dim=16,
               num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=40,
               extra_num_layers=12, rope_theta=1000000.0, rope_scaling=None,
               rope_theta_hw=10000.0, layer_types=["full_attention"] * 32,
               tie_word_embeddings=True, torch_dtype="bfloat16")
    vision = dict(model_type="neo_vision", llm_hidden_size=[64], downsample_ratio=[0.5],
                  hidden_size=32, rope_theta_vision=10000.0)
    (tmp_path / "config.json").write_text(json.dumps(dict(
        model_type="neo_chat", template="neo1_0", use_backbone_lora=0, use_llm_lora=0,
        auto_map={"AutoModel": "modeling_neo_chat.NEOChatModel"}, llm_config=llm,
        vision_config=vision, img_context_token_id=151669, img_start_token_id=151670)))
    cfg = NEOChatConfig.from_pretrained(tmp_path)
    assert cfg.llm_config.rope_theta == 1000000.0
    assert len(cfg.llm_config.layer_types) == cfg.llm_config.num_hidden_layers == 40
    assert cfg.vision_config.llm_hidden_size == 64 and cfg.vision_config.downsample_ratio == 0.5
    assert cfg.tie_word_embeddings and cfg.img_end_token_id is None


def test_build_neo_says_to_download_a_hub_id_first(tmp_path, capsys):
    """``--llm Qwen/Qwen3-1.7B-Base`` is not a folder: the tool names the download command
    (transformers failed with 'Repo id must be in the form ...' on the joined path)."""
    from data_tools import build_neo

    rc = build_neo.main(["--llm", "Qwen/Qwen3-1.7B-Base", "--extra-layers", "2",
                         "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "modelscope download --model Qwen/Qwen3-1.7B-Base" in err
    assert not (tmp_path / "out").exists()
