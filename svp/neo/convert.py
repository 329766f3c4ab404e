"""Qwen3 LLM -> NEO-init checkpoint (upstream: VLMTrainKit/neo/model/modeling_neo_qwen3.py,
build.py), as pure state-dict functions.

LLM layer i becomes layer i + E behind E new pre-buffer layers. In every LLM layer the new
``q_proj_hw`` is built from the same layer's ``q_proj`` (per head, quarters [Q1 Q2 Q3 Q4] ->
[Q1 Q3 Q1 Q3]), ``k_proj_hw`` is zero and the half-norms are one, so the H/W score terms
vanish and the converted model computes exactly the base LLM. The pre-buffer's linear weights
are ``randn * 0.02`` from a seeded generator (``k_proj_hw`` included) and its norms one.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

PRE = "language_model."
HW_NORMS = ("q_norm_h", "q_norm_w", "k_norm_h", "k_norm_w")
LAYER_LINEARS = ("self_attn.q_proj", "self_attn.q_proj_hw", "self_attn.k_proj",
                 "self_attn.k_proj_hw", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def hw_query_from_q(q_weight: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """``q_proj_hw`` rows from ``q_proj`` rows: per head [Q1, Q3, Q1, Q3] of its quarters, so
    both the H and the W half start as the highest-frequency quarter and its rotate-half
    partner."""
    if head_dim % 4:
        raise ValueError(f"head_dim {head_dim} is not a multiple of 4")
    q = q_weight.view(num_heads, 4, head_dim // 4, -1)
    return torch.cat((q[:, 0], q[:, 2], q[:, 0], q[:, 2]), dim=1).reshape_as(q_weight)


def _layer_shapes(cfg) -> dict[str, tuple[int, ...]]:
    e, d = cfg.hidden_size, cfg.head_dim
    h, kv, i = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size
    shapes = {"self_attn.q_proj": (h * d, e), "self_attn.q_proj_hw": (h * d, e),
              "self_attn.k_proj": (kv * d, e), "self_attn.k_proj_hw": (kv * d, e),
              "self_attn.v_proj": (kv * d, e), "self_attn.o_proj": (e, h * d),
              "mlp.gate_proj": (i, e), "mlp.up_proj": (i, e), "mlp.down_proj": (e, i)}
    shapes.update({n: (e,) for n in ("input_layernorm", "post_attention_layernorm")})
    shapes.update({"self_attn.q_norm": (d,), "self_attn.k_norm": (d,)})
    shapes.update({f"self_attn.{n}": (d // 2,) for n in HW_NORMS})
    return shapes


def pre_buffer_layer(cfg, generator: torch.Generator, dtype: torch.dtype) -> dict:
    """One new layer: every linear ``randn * 0.02`` (no depth scaling), every norm one."""
    out = {}
    for name, shape in _layer_shapes(cfg).items():
        if name in LAYER_LINEARS:
            out[name] = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
        else:
            out[name] = torch.ones(shape, dtype=dtype)
    return out


def llm_layer(base: dict[str, torch.Tensor], cfg) -> dict:
    """A base Qwen3 layer (names relative to ``model.layers.i.``) plus its H/W tensors."""
    out = dict(base)
    q = base["self_attn.q_proj.weight"]
    out["self_attn.q_proj_hw.weight"] = hw_query_from_q(q, cfg.num_attention_heads, cfg.head_dim)
    out["self_attn.k_proj_hw.weight"] = torch.zeros_like(base["self_attn.k_proj.weight"])
    for n in HW_NORMS:
        out[f"self_attn.{n}.weight"] = torch.ones(cfg.head_dim // 2, dtype=q.dtype)
    return out


def convert_layers(base: dict[str, torch.Tensor], cfg, extra: int, seed: int,
                   dtype: torch.dtype) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield ``(new_index, {relative name: tensor})`` for the pre-buffer, then the LLM layers
    moved up by ``extra`` (``base`` holds Qwen3 names, ``model.layers.i.*``)."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(extra):
        layer = pre_buffer_layer(cfg, gen, dtype)
        yield i, {(f"{k}.weight"): v for k, v in layer.items()}
    n_llm = cfg.num_hidden_layers - extra
    for i in range(n_llm):
        prefix = f"model.layers.{i}."
        rel = {k[len(prefix):]: v for k, v in base.items() if k.startswith(prefix)}
        if not rel:
            raise KeyError(f"the LLM checkpoint has no {prefix}* tensors ({n_llm} layers "
                           "expected)")
        yield i + extra, llm_layer(rel, cfg)


def convert_state_dict(base: dict[str, torch.Tensor], cfg, extra: int, seed: int = 42,
                       dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The language-model part of a NEO-init state dict from a Qwen3 state dict."""
    if "model.layers.0.self_attn.q_proj_hw.weight" in base:
        raise ValueError("this checkpoint already has q_proj_hw: it is a NEO checkpoint, "
                         "not a Qwen3 LLM")
    dtype = dtype or base["model.embed_tokens.weight"].dtype
    out = {f"{PRE}model.embed_tokens.weight": base["model.embed_tokens.weight"],
           f"{PRE}model.norm.weight": base["model.norm.weight"]}
    if "lm_head.weight" in base and not cfg.tie_word_embeddings:
        out[f"{PRE}lm_head.weight"] = base["lm_head.weight"]
    elif not cfg.tie_word_embeddings:
        out[f"{PRE}lm_head.weight"] = base["model.embed_tokens.weight"].clone()
    for idx, layer in convert_layers(base, cfg, extra, seed, dtype):
        for k, v in layer.items():
            out[f"{PRE}model.layers.{idx}.{k}"] = v
    return out
