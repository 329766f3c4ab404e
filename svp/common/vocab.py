"""Adding tokens to a tokenizer and a model (the mask tokens, CoVT's visual-thought tokens):

- Non-special added tokens (``special=False, normalized=False``), so
  ``decode(skip_special_tokens=True)`` keeps them and no normaliser rewrites them.
- The embedding matrix is never shrunk: Qwen2.5-VL ships 152064 rows for a 151665-entry
  tokenizer, and resizing to ``len(tokenizer)`` would cut rows the checkpoint relies on. It
  only grows when the tokenizer outgrows it, to a multiple of 128 (as ms-swift does).
- New rows (input embeddings, and the output head when it is not tied) start at the mean
  of the existing token rows plus 0.02 x their std x N(0, 1), seeded.
- Under DeepSpeed ZeRO-3 the model is loaded partitioned: a weight holds an empty shard
  (shape ``[0]``) and its full shape in ``ds_shape``. Sizes are read from ``ds_shape``
  (reading ``shape`` would "grow" a 152064-row matrix to 151680, a shrink), and the rows are
  written inside ``GatheredParameters(..., modifier_rank=0)``, so every rank ends with what
  one process would have written. The summary carries a digest of the new rows, which is
  how a test compares a ZeRO-3 load with a single-process one.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext


def add_tokens_to_tokenizer(tokenizer, tokens: list[str], special: bool = False) -> list[str]:
    """Add the ``tokens`` the tokenizer lacks (in order); returns the tokens added."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=special, normalized=False, lstrip=False,
                                         rstrip=False, single_word=False) for t in missing],
                             special_tokens=special)
    return missing


def init_new_rows(weight, old_len: int, new_ids: list[int], seed: int) -> None:
    """Rows ``new_ids`` <- mean(rows[:old_len]) + 0.02 * std(rows[:old_len]) * N(0, 1)."""
    import torch

    if not new_ids:
        return
    with torch.no_grad():
        ref = weight[:old_len].float()
        mean = ref.mean(0, keepdim=True)
        std = ref.std(0, keepdim=True).clamp_min(1e-3)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(new_ids), weight.shape[1], generator=gen)
        rows = torch.tensor(new_ids, device=weight.device)
        weight[rows] = (mean + 0.02 * std * noise).to(weight.dtype).to(weight.device)


def full_rows(weight) -> int:
    """Rows of an embedding matrix, also when ZeRO-3 holds only a shard of it."""
    shape = getattr(weight, "ds_shape", None)
    return int(shape[0]) if shape is not None else int(weight.shape[0])


def _gathered(params):
    """Full parameters while the block runs (rank 0's writes broadcast on exit) under ZeRO-3;
    nothing to do otherwise."""
    if not any(hasattr(p, "ds_id") for p in params):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def rows_digest(weights, ids: list[int]) -> str:
    """SHA-256 (first 16 hex) of the rows ``ids`` of each weight, in float32."""
    h = hashlib.sha256()
    for w in weights:
        h.update(w[ids].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def add_tokens(model, tokenizer, groups: list[tuple[list[str], bool]], seed: int = 0) -> dict:
    """Add each group of (tokens, special) to ``tokenizer`` and grow/initialise ``model``'s
    embeddings in place (partitioned ZeRO-3 weights included).

    Returns a summary: tokens added, rows before and after, whether the head is tied, and
    the digest of the new rows (``None`` when nothing was added).
    """
    old_len = len(tokenizer)
    added = [t for tokens, special in groups
             for t in add_tokens_to_tokenizer(tokenizer, tokens, special)]
    rows_before = full_rows(model.get_input_embeddings().weight)
    if len(tokenizer) > rows_before:  # HF's resize gathers partitioned weights itself
        model.resize_token_embeddings(int(math.ceil(len(tokenizer) / 128) * 128),
                                      mean_resizing=False)
    new_ids = tokenizer.convert_tokens_to_ids(added) if added else []
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is None or head.weight is emb.weight
    weights = [emb.weight] if tied else [emb.weight, head.weight]
    digest = None
    with _gathered(weights):
        for k, weight in enumerate(weights):
            init_new_rows(weight, old_len, new_ids, seed + k)
        if new_ids:
            digest = rows_digest(weights, new_ids)
    return {"added": len(added), "tokenizer_len": len(tokenizer), "rows_before": rows_before,
            "rows_after": full_rows(emb.weight), "tied_head": tied, "rows_digest": digest}
