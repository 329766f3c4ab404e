"""Weighted losses score only the supervised columns, with the loss ms-swift computes on its
suffix of every row (its own per-token loss function, the same roll)."""

from __future__ import annotations

import pytest
import torch

from svp.common.supervised_logits import IGNORE, supervised_columns


def _batch(seed: int = 0, rows: int = 3, length: int = 40, vocab: int = 50):
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((rows, length), IGNORE)
    scale = torch.zeros(rows, length)
    for r in range(rows):  # each row: a prompt of its own length, then a supervised answer
        start = int(torch.randint(3, length - 8, (1,), generator=g))
        stop = int(torch.randint(start + 2, length + 1, (1,), generator=g))
        labels[r, start:stop] = torch.randint(0, vocab, (stop - start,), generator=g)
        scale[r, start:stop] = torch.where(torch.rand(stop - start, generator=g) < 0.3, 2.0, 1.0)
    logits = torch.randn(rows, length, vocab, generator=g, dtype=torch.float64)
    return logits, labels, scale


def _swift_loss(logits, labels, scale):
    """What ms-swift's trainer does with the logits the model returned for these labels."""
    from types import SimpleNamespace

    from swift.trainers.utils import per_token_loss_func

    per_token = per_token_loss_func(SimpleNamespace(logits=logits), labels)
    weighted = per_token * torch.roll(scale, shifts=-1, dims=-1).view(-1)
    return weighted.sum() / (labels != IGNORE).sum()


def _suffix(logits, labels, scale):
    """ms-swift's own choice for several rows: everything from the earliest supervised token."""
    keep = labels.shape[-1] - int((labels != IGNORE).int().argmax(-1).min()) + 1
    return logits[:, -keep:], labels[:, -keep:], scale[:, -keep:]


@pytest.mark.parametrize("seed", range(5))
def test_same_loss_as_the_suffix_on_fewer_columns(seed):
    logits, labels, scale = _batch(seed)
    reference = _swift_loss(*_suffix(logits, labels, scale))
    new_labels, new_scale, keep = supervised_columns(labels, scale)
    ours = _swift_loss(logits[:, keep], new_labels, new_scale)
    assert abs(float(ours - reference)) < 1e-6
    supervised = int((labels != IGNORE).any(0).sum())
    assert int(keep.sum()) == supervised + 1 <= _suffix(logits, labels, scale)[0].shape[1]


def test_gaps_between_answers_are_not_scored():
    """Two assistant turns in a row: the user turn between them costs no logits."""
    logits, labels, scale = _batch(1, rows=2, length=30)
    labels[:] = IGNORE
    labels[:, 5:9] = 7
    labels[:, 20:25] = 3
    scale = (labels != IGNORE).float()
    new_labels, new_scale, keep = supervised_columns(labels, scale)
    assert int(keep.sum()) == 4 + 5 + 1
    reference = _swift_loss(logits, labels, scale)  # all columns: the exact definition
    assert abs(float(_swift_loss(logits[:, keep], new_labels, new_scale) - reference)) < 1e-6


def test_layouts_it_leaves_to_ms_swift():
    labels = torch.full((2, 6), IGNORE)
    assert supervised_columns(labels, None) is None  # nothing supervised
    labels[0, 0] = 1
    assert supervised_columns(labels, None) is None  # first column has no logit before it


def test_the_trainer_uses_it_for_weighted_losses_only():
    """After register(), ms-swift's trainer keeps the supervised columns for a weighted loss
    on several rows, and its own suffix for the binary path (no ``loss_scale``)."""
    from types import SimpleNamespace

    from swift.trainers.mixin import SwiftMixin

    from svp.common import swift_trainer

    swift_trainer.register()
    trainer = SimpleNamespace(template=SimpleNamespace(sequence_parallel_size=1),
                              args=SimpleNamespace(tuner_backend="peft"))
    _, labels, scale = _batch(2)
    weighted = {"labels": labels.clone(), "loss_scale": scale.clone()}
    SwiftMixin.prepare_logits_to_keep(trainer, weighted)
    assert weighted["logits_to_keep"].dtype == torch.bool
    assert int(weighted["logits_to_keep"].sum()) == weighted["labels"].shape[1]
    binary = {"labels": labels.clone()}
    SwiftMixin.prepare_logits_to_keep(trainer, binary)
    assert isinstance(binary["logits_to_keep"], int)
