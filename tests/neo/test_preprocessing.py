"""NEO's preprocessing: smart_resize and token counts, patch flattening, the vision
embedding's equivalences and its 2-D RoPE against an independent reference."""

from __future__ import annotations

import math

import pytest
import torch

from svp.neo.image import flatten_patches, image_max_pixels, smart_resize
from svp.neo.rope import vision_rope_2d


@pytest.mark.parametrize("hw, bounds, out, tokens", [
    ((500, 335), (12544, 262144), (512, 320), 160),
    ((1000, 2000), (65536, 4194304), (992, 1984), 1922),
    ((20, 30), (65536, 4194304), (224, 320), 70),
    ((3000, 4000), (65536, 4194304), (1760, 2336), 4015),
])
def test_smart_resize_matches_the_kit(hw, bounds, out, tokens):
    got = smart_resize(*hw, 32, *bounds)
    assert got == out
    assert (got[0] // 32) * (got[1] // 32) == tokens


def test_smart_resize_rounds_half_to_even_and_refuses_extreme_aspect():
    assert smart_resize(80, 400, 32, 32 * 32, 10 ** 7)[0] == 64  # round(2.5) == 2
    assert smart_resize(112, 400, 32, 32 * 32, 10 ** 7)[0] == 128  # round(3.5) == 4
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2500)


def test_multi_image_budget_only_in_training():
    assert image_max_pixels(1, 100, 1000, training=True) == 1000
    assert image_max_pixels(4, 100, 1000, training=True) == 500
    assert image_max_pixels(40, 100, 1000, training=True) == 100
    assert image_max_pixels(4, 100, 1000, training=False) == 1000


def test_patch_rows_are_row_major_channel_major():
    img = torch.randn(3, 64, 96)
    rows, (gh, gw) = flatten_patches(img)
    assert (gh, gw) == (4, 6) and rows.shape == (24, 768)
    assert torch.equal(rows[1], img[:, 0:16, 16:32].reshape(-1))
    for k in (0, 7, 23):
        y, x = divmod(k, gw)
        assert torch.equal(rows[k], img[:, 16 * y:16 * y + 16, 16 * x:16 * x + 16].reshape(-1))


def _reference_rope(x: torch.Tensor, gw: int, base: float) -> torch.Tensor:
    """Complex-number form of the interleaved 2-D rotation, one patch at a time."""
    n, d = x.shape
    half = d // 2
    out = torch.empty(n, d, dtype=torch.float64)
    for k in range(n):
        for part, pos in ((slice(0, half), k % gw), (slice(half, d), k // gw)):
            v = x[k, part].double()
            z = torch.complex(v[0::2], v[1::2])
            ang = torch.tensor([pos * base ** (-2 * i / half) for i in range(half // 2)],
                               dtype=torch.float64)
            z = z * torch.polar(torch.ones_like(ang), ang)
            seg = torch.stack((z.real, z.imag), -1).reshape(-1)
            out[k, part] = seg
    return out


def test_vision_rope_matches_a_complex_reference():
    x = torch.randn(12, 32)
    got = vision_rope_2d(x, gw := 4, 1000.0)
    assert torch.allclose(got.double(), _reference_rope(x, gw, 1000.0), atol=1e-5)
    assert torch.equal(got[0], x[0])  # position (0, 0) is not rotated


def test_vision_embedding_equals_whole_image_conv_and_padded_batch():
    """Patch conv on flattened rows == a stride-16 conv of the image; the per-image merge conv
    == upstream's padded batch conv cropped per image, for mixed image sizes."""
    from svp.neo.configuration import NEOVisionConfig
    from svp.neo.modeling import NEOVisionEmbeddings

    torch.manual_seed(0)
    cfg = NEOVisionConfig(llm_hidden_size=24, hidden_size=16, rope_theta_vision=1000.0)
    emb = NEOVisionEmbeddings(cfg).double()
    images = [torch.randn(3, 64, 96, dtype=torch.float64),
              torch.randn(3, 32, 128, dtype=torch.float64)]
    flat = [flatten_patches(im) for im in images]
    pixels = torch.cat([f[0] for f in flat])
    grid = torch.tensor([f[1] for f in flat])
    got = emb(pixels, grid)

    feats, hmax, wmax = [], max(g[0] for _, g in flat), max(g[1] for _, g in flat)
    padded = torch.zeros(len(images), hmax, wmax, 16, dtype=torch.float64)
    for i, im in enumerate(images):
        f = emb.act(emb.patch_embedding(im[None]))[0]  # whole-image conv [16, gh, gw]
        gh, gw = f.shape[1:]
        rows = f.flatten(1).T
        p_rows = emb.act(emb.patch_embedding(pixels.view(-1, 3, 16, 16)).flatten(1))
        start = sum(g[0] * g[1] for _, g in flat[:i])
        assert torch.allclose(rows, p_rows[start:start + gh * gw], atol=1e-10)
        padded[i, :gh, :gw] = vision_rope_2d(rows, gw, 1000.0).view(gh, gw, -1)
        feats.append((gh, gw))
    merged = emb.dense_embedding(padded.permute(0, 3, 1, 2))
    ref = torch.cat([merged[i, :, :gh // 2, :gw // 2].flatten(1).T
                     for i, (gh, gw) in enumerate(feats)])
    assert got.shape == (math.prod((2, 3)) + math.prod((1, 4)), 24)
    assert torch.allclose(got, ref, atol=1e-10)
