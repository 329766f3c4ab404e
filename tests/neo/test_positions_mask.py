"""NEO's positions and mask: (t, h, w) indexes and the mixed mask, with the kit's golden
values, a brute-force mask reference, and flex attention against dense SDPA."""

from __future__ import annotations

import pytest
import torch

from svp.neo.mask import dense_mask, flex_block_mask
from svp.neo.positions import doc_ids_from_boundaries, hw_indexes, image_ids, t_indexes

CTX, START, END = 151669, 151670, 151671


def row(*parts):
    return torch.tensor([[x for p in parts for x in (p if isinstance(p, list) else [p])]])


def test_t_compresses_an_image_to_three_steps():
    ids = row([5, 6, 7], START, [CTX] * 6, END, [8, 9])
    t = t_indexes(ids, START, CTX)[0].tolist()
    assert t == [0, 1, 2, 3] + [4] * 6 + [5, 6, 7]  # golden: <img> a, image a+1, </img> a+2


def test_t_restarts_per_packed_sample_and_ignores_left_padding():
    ids = row([5, 6], START, [CTX] * 4, END, [7], [8, 9, 10], [11, START], [CTX] * 4, [END])
    bounds = torch.tensor([0, 9, 12, 19])
    doc = doc_ids_from_boundaries(bounds, ids.shape[1])[None]
    t = t_indexes(ids, START, CTX, doc)[0]
    assert t[bounds[:-1]].tolist() == [0, 0, 0]
    assert t[12:].tolist() == [0, 1, 2, 2, 2, 2, 3]
    # the same sample left-padded in a batch gets the same indexes
    padded = torch.cat((torch.zeros(1, 3, dtype=torch.long), ids[:, :9]), 1)
    valid = torch.tensor([[False] * 3 + [True] * 9])
    assert t_indexes(padded, START, CTX, valid=valid)[0, 3:].tolist() == t[:9].tolist()


def test_hw_on_the_merged_grid():
    ids = row(5, START, [CTX] * 6, END, START, [CTX] * 2, END)
    h, w = hw_indexes(ids, CTX, torch.tensor([[4, 6], [2, 4]]) // 2)
    ctx = ids[0] == CTX
    pairs = list(zip(h[0][ctx].tolist(), w[0][ctx].tolist(), strict=True))
    assert pairs[:6] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]  # golden, 4x6 grid
    assert pairs[6:] == [(0, 0), (0, 1)]
    assert h[0][~ctx].abs().sum() == 0 and w[0][~ctx].abs().sum() == 0
    with pytest.raises(ValueError, match="truncated"):
        hw_indexes(ids[:, :-2], CTX, torch.tensor([[2, 3], [1, 2]]))


def brute_force(ids, bounds):
    n = ids.shape[1]
    doc = doc_ids_from_boundaries(bounds, n)
    img = image_ids(ids, START, CTX)[0]
    out = torch.zeros(n, n, dtype=torch.bool)
    for q in range(n):
        for k in range(n):
            same = bool(doc[q] == doc[k])
            out[q, k] = same and (k <= q or (img[q] > 0 and img[q] == img[k]))
    return out


def packed():
    ids = row([5, 6], START, [CTX] * 4, END, [7], [8, 9, START], [CTX] * 2, [END, 10])
    bounds = torch.tensor([0, 9, 16])
    return ids, bounds


def test_dense_mask_equals_the_predicate():
    ids, bounds = packed()
    doc = doc_ids_from_boundaries(bounds, ids.shape[1])[None]
    img = image_ids(ids, START, CTX)
    m = dense_mask(doc, img)[0, 0]
    assert torch.equal(m, brute_force(ids, bounds))
    start, end = 2, 7  # <img>, </img> of the first image
    assert m[end, 3:7].all() and not m[start, 3:7].any()
    assert m[3, 3:7].all()  # a context token sees its whole image
    assert not m[9:, :9].any() and not m[:9, 9:].any()  # nothing crosses samples


def test_padding_rows_attend_to_themselves_only():
    ids = row(0, 0, 5, 6)
    valid = torch.tensor([[False, False, True, True]])
    m = dense_mask(torch.zeros_like(ids), torch.zeros_like(ids), valid)[0, 0]
    assert m[1].tolist() == [False, True, False, False]
    assert m[3].tolist() == [False, False, True, True]


def test_flex_block_mask_pads_to_128_and_equals_dense_sdpa():
    ids, bounds = packed()
    doc = doc_ids_from_boundaries(bounds, ids.shape[1])[None]
    img = image_ids(ids, START, CTX)
    block, padded = flex_block_mask(doc, img)  # built on the tensors' device (CPU here)
    assert padded == 128
    from torch.nn.attention.flex_attention import flex_attention

    torch.manual_seed(0)
    n = ids.shape[1]
    q = torch.randn(1, 4, n, 32)
    k = torch.randn(1, 2, n, 32)
    v = torch.randn(1, 2, n, 16)
    pad = (0, 0, 0, padded - n)
    with torch.no_grad(), pytest.warns(UserWarning, match="without torch.compile"):
        flex = flex_attention(*(torch.nn.functional.pad(x, pad) for x in (q, k, v)),
                              block_mask=block, scale=16 ** -0.5, enable_gqa=True)[:, :, :n]
        dense = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=dense_mask(doc, img), scale=16 ** -0.5, enable_gqa=True)
    assert (flex - dense).abs().max() < 1e-5
