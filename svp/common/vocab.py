"""Adding tokens to a tokenizer and a model (the mask tokens, CoVT's visual-thought tokens):

- Non-special added tokens (``special=False, normalized=False``), so
  ``decode(skip_special_tokens=True)`` keeps them and no normaliser rewrites them.
- The embedding matrix is never shrunk: Qwen2.5-VL ships 152064 rows for a 151665-entry
  tokenizer, and resizing to ``len(tokenizer)`` would cut rows the checkpoint relies on. It
  only grows when the tokenizer outgrows it, to a multiple of 128 (as ms-swift does).
- New rows (input embeddings, and the output head when it is not tied) start at the mean
  of the existing token rows plus 0.02 x their std x N(0, 1), seeded.
"""

from __future__ import annotations

import math


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


def add_tokens(model, tokenizer, groups: list[tuple[list[str], bool]], seed: int = 0) -> dict:
    """Add each group of (tokens, special) to ``tokenizer`` and grow/initialise ``model``'s
    embeddings in place.

    Returns a summary: tokens added, rows before and after, whether the head is tied.
    """
    old_len = len(tokenizer)
    added = [t for tokens, special in groups
             for t in add_tokens_to_tokenizer(tokenizer, tokens, special)]
    emb = model.get_input_embeddings()
    rows_before = emb.weight.shape[0]
    if len(tokenizer) > rows_before:
        model.resize_token_embeddings(int(math.ceil(len(tokenizer) / 128) * 128),
                                      mean_resizing=False)
    new_ids = tokenizer.convert_tokens_to_ids(added) if added else []
    init_new_rows(model.get_input_embeddings().weight, old_len, new_ids, seed)
    head = model.get_output_embeddings()
    tied = head is None or head.weight is model.get_input_embeddings().weight
    if not tied:
        init_new_rows(head.weight, old_len, new_ids, seed + 1)
    return {"added": len(added), "tokenizer_len": len(tokenizer),
            "rows_before": rows_before,
            "rows_after": model.get_input_embeddings().weight.shape[0], "tied_head": tied}
