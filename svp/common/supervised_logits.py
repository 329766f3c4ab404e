"""Which logits a weighted (non-binary) loss needs: only the columns that predict a
supervised token.

A weighted loss scale (``--loss_scale default+mask_span`` and every other non-binary one)
makes ms-swift pop the labels and score the model's logits itself. With one sample per
device it keeps only the supervised positions; with several it keeps a *suffix* starting at
the earliest supervised position of any row, so every prompt token after that point, in
every row, gets a full-vocabulary logit row that is then multiplied by zero. On a 4B model
with a 152k vocabulary at 8k tokens that is gigabytes of fp32 logits per sample.

:func:`supervised_columns` keeps instead the union over the rows of the columns whose next
token is supervised (a column is kept for all rows or none, because the model indexes its
hidden states ``[:, keep, :]``). Labels and weights are compacted to the same columns with
the one-column shift ms-swift's loss expects (a leading ignored column, the last logit
column paired with it after the roll), so the loss is the same sum over the same tokens.
Pure tensor code: tested without ms-swift.
"""

from __future__ import annotations

import torch

IGNORE = -100


def supervised_columns(labels: torch.Tensor, loss_scale: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None:
    """``(labels, loss_scale, keep)`` restricted to the supervised columns, or ``None`` when
    the layout does not allow it (the first column supervised, nothing supervised).

    ``labels``/``loss_scale``: ``[B, L]`` as the template collates them (label ``t`` is the
    token at ``t``). ``keep``: a ``[L]`` boolean over logit positions; position ``c`` is kept
    when some row supervises the token at ``c + 1``, and the last position always (it meets
    the leading ignored column after ms-swift rolls the labels by one). The returned labels
    and weights have ``keep.sum()`` columns and line up with the kept logits after that roll.
    """
    if labels.dim() != 2:
        return None
    supervised = (labels != IGNORE).any(dim=0)
    if bool(supervised[0]) or not bool(supervised.any()):
        return None  # the first token has no logit before it; nothing to score
    keep = torch.nn.functional.pad(supervised[1:], (0, 1), value=True)
    new_labels = torch.nn.functional.pad(labels[:, supervised], (1, 0), value=IGNORE)
    new_scale = None
    if loss_scale is not None:
        new_scale = torch.nn.functional.pad(loss_scale[:, supervised], (1, 0), value=0)
    return new_labels, new_scale, keep
