"""Trainable heads: visual-thought token hidden states -> what each expert's decoder reads.

As upstream (``AnchorModels`` in ``covt_qwen2_5_vl.py``): a projection of the hidden states,
then for SAM / DINO / edge / CLIP-like experts a cross-attention in which learned queries
attend to the projected tokens, for depth a per-token MLP. Fixed on purpose: the projection is
L2-normalised over the *feature* axis (upstream normalised over the token axis), and every
head is a plain ``nn.Module`` child of :class:`CovtHeads`, so LoRA / full tuning train it and
the checkpoint saves it (upstream's depth MLP stayed frozen under LoRA).

SAM's tokens need their positions (the 8 pad embeddings are identical inputs; only position
lets them specialise): upstream rotates the hidden states with a RoPE over the token index
(:func:`rope_over_tokens`, the default); ``additive`` is our earlier sinusoid added to them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SAM_POSITIONS = ("rope", "additive")


def rope_over_tokens(x: torch.Tensor) -> torch.Tensor:
    """Upstream CoVT's rotation of the SAM token states (``apply_rope_custome``): token n of
    ``x [.., N, K]`` has its first and second feature halves rotated as pairs by angles
    n * 10000^(-2i / K), computed in ``x``'s dtype (an odd K gets a zero feature for the
    rotation, dropped after). Norm-preserving, unlike an added encoding."""
    n, k = x.shape[-2], x.shape[-1]
    odd = k % 2 == 1
    if odd:
        x = F.pad(x, (0, 1))
        k += 1
    half = k // 2
    first, second = x[..., :half], x[..., half:]
    i = torch.arange(half, device=x.device, dtype=x.dtype)
    theta = torch.exp(-torch.log(torch.tensor(10000.0, device=x.device, dtype=x.dtype))
                      * (2 * i / k))
    angle = torch.arange(n, device=x.device, dtype=x.dtype)[:, None] * theta
    cos, sin = angle.cos(), angle.sin()
    out = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
    return out[..., :k - int(odd)]


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
                 positions: str | None = None):
        super().__init__()
        if positions not in (None, *SAM_POSITIONS):
            raise ValueError(f"unknown token positions {positions!r} (one of {SAM_POSITIONS})")
        self.proj = nn.Linear(hidden, dim)
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * dim ** -0.5)
        self.attn = CrossAttention(dim, heads)
        self.positions = positions
        self.n_tokens = n_tokens if positions else 1  # tokens it must be given (idle runs)
        self.register_buffer("pos", sinusoid(n_tokens, hidden) if positions == "additive"
                             else None, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, k, H] -> [B, n_queries, d]
        if self.positions == "rope":
            h = rope_over_tokens(h)
        elif self.pos is not None:
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

    def __init__(self, hidden: int, shapes: dict, sam_positions: str = "rope"):
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
                                            positions=sam_positions if name == "sam"
                                            else None)
        self.heads = nn.ModuleDict(heads)

    def forward(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return self.heads[name](h)

    def input_width(self, name: str) -> int:
        """Tokens a head must be given on an idle run: SAM's token count, else any (1)."""
        return getattr(self.heads[name], "n_tokens", 1)
