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


class AttentionHead(nn.Module):
    """Linear(H, d) -> L2 norm over d -> MHA(queries [n_queries, d], keys = values = tokens)."""

    def __init__(self, hidden: int, dim: int, n_tokens: int, n_queries: int, heads: int,
                 positions: bool = False):
        super().__init__()
        self.proj = nn.Linear(hidden, dim)
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * dim ** -0.5)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.register_buffer("pos", sinusoid(n_tokens, hidden) if positions else None,
                             persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, k, H] -> [B, n_queries, d]
        if self.pos is not None:
            h = h + self.pos.to(h.dtype)
        kv = F.normalize(self.proj(h), dim=-1) * self.proj.out_features ** 0.5  # unit RMS
        q = self.queries.to(kv.dtype).expand(h.shape[0], -1, -1)
        return self.attn(q, kv, kv, need_weights=False)[0]


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
