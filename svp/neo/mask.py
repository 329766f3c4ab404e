"""NEO's mixed attention mask (upstream: the flex mask of
VLMTrainKit/neo/model/modeling_neo_chat.py): causal text, bidirectional inside one image,
nothing across the samples of a packed row.

``allowed(q, k) = same_doc and valid_k and (k <= q or (img_q > 0 and img_q == img_k))``, plus
the diagonal, so that a padding query (left padding at inference) attends to itself instead of
to nothing: what a kernel returns for an all-masked row is its own convention (torch 2.13's
math kernel gives 0, others NaN, and 0 * NaN in a later value product would leak into real
rows). ``<img>`` and ``</img>`` carry image id 0, so ``</img>`` sees its whole image
causally and ``<img>`` sees none of it.

Two materialisations of the same predicate: a dense boolean tensor for SDPA (exact, CPU and
tests) and a flex-attention ``BlockMask`` for GPU training (sequence padded to a multiple of
the block size with its own document id).
"""

from __future__ import annotations

import torch

FLEX_BLOCK = 128


def dense_mask(doc: torch.Tensor, img: torch.Tensor,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, 1, L, L]`` boolean (True = attend) from ``[B, L]`` document ids, image ids
    (0 = not an image token) and key validity."""
    b, n = doc.shape
    pos = torch.arange(n, device=doc.device)
    causal = pos[None, :, None] >= pos[None, None, :]
    same_doc = doc[:, :, None] == doc[:, None, :]
    same_img = (img[:, :, None] > 0) & (img[:, :, None] == img[:, None, :])
    allowed = same_doc & (causal | same_img)
    if valid is not None:
        allowed = allowed & valid[:, None, :].bool()
    allowed = allowed | torch.eye(n, dtype=torch.bool, device=doc.device)[None]
    return allowed[:, None]


def flex_block_mask(doc: torch.Tensor, img: torch.Tensor, valid: torch.Tensor | None = None,
                    block: int = FLEX_BLOCK):
    """A flex-attention ``BlockMask`` with the predicate of :func:`dense_mask` on the sequence
    padded to a multiple of ``block``; returns ``(block_mask, padded_length)``. The padding gets
    a document id of its own so no real token attends to it; the mask is built on the tensors'
    device (upstream left it at the CUDA default, which breaks on any other device)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, n = doc.shape
    padded = -(-n // block) * block
    pad = padded - n
    fresh = int(doc.max()) + 1 if doc.numel() else 0
    doc_p = torch.nn.functional.pad(doc, (0, pad), value=fresh)
    img_p = torch.nn.functional.pad(img, (0, pad), value=0)
    if valid is None:
        valid = torch.ones_like(doc, dtype=torch.bool)
    valid_p = torch.nn.functional.pad(valid.bool(), (0, pad), value=True)

    def mask_mod(b_idx, h_idx, q_idx, kv_idx):
        same_doc = doc_p[b_idx, q_idx] == doc_p[b_idx, kv_idx]
        iq = img_p[b_idx, q_idx]
        same_img = (iq > 0) & (iq == img_p[b_idx, kv_idx])
        keep = same_doc & ((q_idx >= kv_idx) | same_img) & valid_p[b_idx, kv_idx]
        return keep | (q_idx == kv_idx)

    mask = create_block_mask(mask_mod, b, None, padded, padded, device=doc.device,
                             BLOCK_SIZE=block)
    return mask, padded
