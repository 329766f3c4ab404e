"""Trainable heads: visual-thought token hidden states -> what each expert's decoder reads.

As upstream (``AnchorModels`` in ``covt_qwen2_5_vl.py``): a projection of the hidden states,
then for SAM / DINO / edge / CLIP-like experts a cross-attention in which learned queries
attend to the projected tokens, for depth a per-token MLP. Fixed on purpose: the projection is
L2-normalised over the *feature* axis (upstream normalised over the token axis), SAM's token
positions get a sinusoidal encoding so the 8 identical pad embeddings can specialise, and every
head is a plain ``nn.Module`` child of :class:`CovtHeads`, so LoRA / full tuning train it and
the checkpoint saves it (upstream's depth MLP stayed frozen under LoRA)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(n, dim)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return enc


class CrossAttention(nn.Module):
    """``nn.MultiheadAttention``'s math, initialisation and parameter names (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj.*``, so its state dicts load), with ``out_proj`` *called* as
    a module. DeepSpeed ZeRO-3 gathers a module's parameters when that module's forward runs;
    ``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``, which
    would leave it partitioned (empty) under ZeRO-3."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
                ) -> torch.Tensor:  # [B, Lq, d], [B, Lk, d], [B, Lk, d] -> [B, Lq, d]
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)

        def split(x: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, heads, L, d / heads]
            return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(F.linear(query, wq, bq)),
                                             split(F.linear(key, wk, bk)),
                                             split(F.linear(value, wv, bv)))
        return self.out_proj(out.transpose(1, 2).flatten(2))


class AttentionHead(nn.Module):
    """Linear(H, d) -> L2 norm over d -> attention(queries [n_queries, d], keys = values =
    tokens)."""

    def __init__(self, hidden: int, dim: int, n_tokens: int, n_queries: int, heads: int,
                 positions: bool = False):
        super().__init__()
        self.proj = nn.Linear(hidden, dim)
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * dim ** -0.5)
        self.attn = CrossAttention(dim, heads)
        self.register_buffer("pos", sinusoid(n_tokens, hidden) if positions else None,
                             persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, k, H] -> [B, n_queries, d]
        if self.pos is not None:
            h = h + self.pos.to(h.dtype)
        kv = F.normalize(self.proj(h), dim=-1) * self.proj.out_features ** 0.5  # unit RMS
        q = self.queries.to(kv.dtype).expand(h.shape[0], -1, -1)
        return self.attn(q, kv, kv)


class TokenMLP(nn.Module):
    """Per-token Linear(H, H) -> GELU -> Linear(H, d) (upstream's depth token generator)."""

    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def _heads_for(dim: int) -> int:
    return next(h for h in (8, 4, 2, 1) if dim % h == 0)


class CovtHeads(nn.Module):
    """One head per chosen expert, keyed by expert name. ``shapes`` maps a name to an
    :class:`~svp.covt.experts.HeadShape` (or to an expert, whose shape is used)."""

    def __init__(self, hidden: int, shapes: dict):
        super().__init__()
        heads = {}
        for name, shape in shapes.items():
            if hasattr(shape, "shape") and callable(shape.shape):
                shape = shape.shape()
            if name == "depth":
                heads[name] = TokenMLP(hidden, shape.token_dim)
            else:
                heads[name] = AttentionHead(hidden, shape.token_dim, shape.n_tokens,
                                            shape.n_queries, _heads_for(shape.token_dim),
                                            positions=name == "sam")
        self.heads = nn.ModuleDict(heads)

    def forward(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return self.heads[name](h)

    def input_width(self, name: str) -> int:
        """Tokens a head reads: its SAM position table's length, else any (1)."""
        pos = getattr(self.heads[name], "pos", None)
        return pos.shape[0] if pos is not None else 1
