"""NEO's two RoPE conventions as pure functions (upstream: modeling_neo_vit.py and
modeling_neo_qwen3.py in VLMTrainKit/neo/model/).

The LLM uses HF's rotate-half pairing (j, j + d/2) separately on three parts of q/k: T over the
full head_dim with ``rope_theta``, and H and W over half a head_dim each with
``rope_theta_hw``. The patch features use an *interleaved* (even, odd) 2-D rotation with
``rope_theta_vision``: columns on the first half of the channels, rows on the second. Mixing
the two conventions up changes every image token, so both live here side by side with their
own tests.
"""

from __future__ import annotations

import torch


def inv_freq(dim: int, base: float, device=None) -> torch.Tensor:
    """``base ** (-2j / dim)`` for j < dim / 2, in float32."""
    if dim % 2:
        raise ValueError(f"RoPE dimension {dim} is odd")
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))


def cos_sin(pos: torch.Tensor, dim: int, base: float, dtype: torch.dtype):
    """HF-layout tables ``[..., dim]`` (frequencies repeated) for integer positions ``pos``,
    computed in float32 and cast to the activation dtype, as upstream does."""
    angles = pos.to(torch.float32)[..., None] * inv_freq(dim, base, pos.device)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin``; cos/sin broadcast over the head axis."""
    return x * cos + rotate_half(x) * sin


def interleaved_rope(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of ``x [N, d]`` by ``pos * base ** (-2i / d)`` (float32 math)."""
    d = x.shape[-1]
    angles = pos.to(torch.float32)[:, None] * inv_freq(d, base, x.device)  # [N, d/2]
    cos, sin = angles.cos(), angles.sin()
    xf = x.to(torch.float32)
    even, odd = xf[..., 0::2], xf[..., 1::2]
    out = torch.empty_like(xf)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def vision_rope_2d(features: torch.Tensor, grid_w: int, base: float) -> torch.Tensor:
    """NEO's 2-D RoPE on one image's patch features ``[N, d]`` in row-major patch order:
    channels ``[:d/2]`` rotate by the column ``k % grid_w``, ``[d/2:]`` by the row
    ``k // grid_w``; the result is cast back to the input dtype."""
    n, d = features.shape
    if d % 4:
        raise ValueError(f"vision hidden size {d} must be a multiple of 4 for 2-D RoPE")
    k = torch.arange(n, device=features.device)
    half = d // 2
    xs = interleaved_rope(features[:, :half], k % grid_w, base)
    ys = interleaved_rope(features[:, half:], k // grid_w, base)
    return torch.cat((xs, ys), dim=-1).to(features.dtype)
