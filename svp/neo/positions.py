"""NEO's (t, h, w) position indexes, document ids and image ids (upstream: get_thw_indexes and the
mask in VLMTrainKit/neo/model/modeling_neo_chat.py).

t is compressed: text tokens count one step each, every image counts three (``<img>``, all of
its context tokens, ``</img>``), and t restarts at 0 for every sample of a packed row. h and w
are the row and column of a context token on the *merged* grid (patch grid / 2), 0 elsewhere.
Padding (left, at inference) takes no t step, so a padded row gets the same indexes as the
sample alone.
"""

from __future__ import annotations

import torch


def doc_ids_from_boundaries(seq_boundaries: torch.Tensor, length: int) -> torch.Tensor:
    """``[L]`` sample index of every position of a packed row from cumulative lengths
    ``[0, L1, L1+L2, ..., L]``."""
    bounds = seq_boundaries.to(torch.long).flatten()
    if bounds[0] != 0 or bounds[-1] != length or bool((bounds[1:] < bounds[:-1]).any()):
        raise ValueError(f"seq_boundaries {bounds.tolist()} do not split a row of {length}")
    sizes = bounds[1:] - bounds[:-1]
    return torch.repeat_interleave(torch.arange(len(sizes), device=bounds.device), sizes)


def sample_starts(doc: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` True at the first position of each document."""
    start = torch.ones_like(doc, dtype=torch.bool)
    start[:, 1:] = doc[:, 1:] != doc[:, :-1]
    return start


def _segmented_cumsum(x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Inclusive cumulative sum of ``x [B, L]`` that restarts where ``start`` is True."""
    total = x.cumsum(-1)
    before = total - x  # exclusive sum at each position
    # the exclusive sum at the most recent start, carried forward
    base = torch.where(start, before, torch.zeros_like(before))
    idx = torch.where(start, torch.arange(x.shape[-1], device=x.device).expand_as(x),
                      torch.zeros_like(x))
    idx = idx.cummax(-1).values
    return total - base.gather(-1, idx)


def t_indexes(input_ids: torch.Tensor, img_start_id: int, img_context_id: int,
              doc: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, L]`` t index: ``cumsum(s + n) - 1`` per document, with ``s = 1`` after ``<img>``
    and ``n = 1`` on every non-context token; pads (``valid`` False) add nothing and get 0."""
    if doc is None:
        doc = torch.zeros_like(input_ids)
    if valid is None:
        valid = torch.ones_like(input_ids, dtype=torch.bool)
    prev = torch.full_like(input_ids, -1)
    prev[:, 1:] = input_ids[:, :-1]
    start = sample_starts(doc)
    s = (prev == img_start_id) & ~start & valid
    n = (input_ids != img_context_id) & valid
    t = _segmented_cumsum((s.long() + n.long()), start) - 1
    return torch.where(valid, t, torch.zeros_like(t)).clamp_min(0)


def image_ids(input_ids: torch.Tensor, img_start_id: int, img_context_id: int) -> torch.Tensor:
    """``[B, L]``: ``k >= 1`` on the context tokens of the k-th image (row-major over the
    batch), 0 elsewhere. An image begins at the token after ``<img>``."""
    prev = torch.full_like(input_ids, -1)
    prev[:, 1:] = input_ids[:, :-1]
    begins = (prev == img_start_id).flatten().long().cumsum(0).view_as(input_ids)
    return torch.where(input_ids == img_context_id, begins, torch.zeros_like(begins))


def hw_indexes(input_ids: torch.Tensor, img_context_id: int,
               merged_grid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, L], [B, L])`` row and column of each context token on its image's merged grid
    ``merged_grid [n_img, 2]`` (images in row-major order over the batch); 0 elsewhere."""
    ctx = input_ids == img_context_id
    h = torch.zeros_like(input_ids)
    w = torch.zeros_like(input_ids)
    n_ctx = int(ctx.sum())
    if n_ctx == 0:
        return h, w
    if merged_grid is None or len(merged_grid) == 0:
        raise ValueError(f"{n_ctx} image context tokens but no image grid")
    grid = merged_grid.to(device=input_ids.device, dtype=torch.long).view(-1, 2)
    counts = grid[:, 0] * grid[:, 1]
    if int(counts.sum()) != n_ctx:
        raise ValueError(f"the images' merged grids {grid.tolist()} hold {int(counts.sum())} "
                         f"tokens but the sequence has {n_ctx} context tokens (an image was "
                         "truncated or its placeholder count is wrong)")
    offsets = torch.arange(n_ctx, device=input_ids.device) - torch.repeat_interleave(
        counts.cumsum(0) - counts, counts)
    width = torch.repeat_interleave(grid[:, 1], counts)
    h[ctx] = offsets // width
    w[ctx] = offsets % width
    return h, w
