"""The builtin mask codec: quantizer contract, shapes, checkpoints, training and resume."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from svp.masktok.codec import load_codec, masks_to_boxes
from svp.masktok.codec.builtin import (
    BuiltinCodec,
    CodecConfig,
    MaskTokenizer,
    ResidualVQ,
    save_checkpoint,
)
from svp.masktok.codec.train import (
    CodecTrainer,
    TrainConfig,
    make_batch,
    reconstruction_iou,
    synthetic_scenes,
)


def vq(**kw) -> ResidualVQ:
    args = dict(depth=2, size=16, dim=8, decay=0.9, dead_fraction=0.03, seed=0)
    args.update(kw)
    return ResidualVQ(**args)


def test_quantizer_codes_commitment_and_straight_through():
    q = vq()
    x = torch.randn(32, 8, requires_grad=True)
    x_q, codes, commit = q(x)
    assert codes.shape == (32, 2) and codes.min() >= 0 and codes.max() < 16
    assert commit.item() > 0
    (x_q.sum() + commit).backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    assert not torch.distributed.is_initialized()  # trained without a process group


def test_embed_codes_sums_levels_and_skips_minus_one():
    q = vq().eval()
    codes = torch.tensor([[3, 5], [3, -1]])
    before = codes.clone()
    z = q.embed_codes(codes)
    assert torch.allclose(z[0], q.embed[0][3] + q.embed[1][5])
    assert torch.allclose(z[1], q.embed[0][3])
    assert torch.equal(codes, before), "embed_codes must not modify its input"


def test_ema_moves_used_codes_and_restarts_dead_ones():
    q = vq(size=8, dead_fraction=0.5)
    q.train()
    x = torch.randn(64, 8)
    q(x)  # first batch seeds the books from data (counts start at 0)
    used_before = q.cluster_size[0].clone()
    embed_before = q.embed[0].clone()
    x2 = torch.randn(4, 8) + 10.0  # far away: only a few codes are used
    q(x2)
    assert (q.cluster_size[0] != used_before).any()
    changed = (q.embed[0] != embed_before).any(1)
    assert changed.any()
    # every entry now has a usage above the dead threshold (restarted ones get the mean)
    assert (q.cluster_size[0] >= 0.5 * q.cluster_size[0].mean() - 1e-6).all()


def test_eval_mode_quantizer_does_not_update():
    q = vq().eval()
    before = q.embed.clone()
    q(torch.randn(16, 8))
    assert torch.equal(q.embed, before)


def test_masks_to_boxes():
    m = np.zeros((2, 6, 8), bool)
    m[0, 1:3, 2:5] = True
    boxes = masks_to_boxes(m)
    assert boxes[0].tolist() == [2, 1, 5, 3]
    assert np.isnan(boxes[1]).all()


def test_codec_interface_shapes_batching_and_errors(trained_codec):
    path, scenes = trained_codec
    codec = load_codec(f"builtin:{path}")
    img, masks = scenes[0]
    codes = codec.encode(img, masks)
    assert codes.shape == (len(masks), 2) and codes.dtype == np.int64
    assert ((codes >= 0) & (codes < 32)).all()
    rec = codec.decode(img, codes)
    assert rec.shape == masks.shape and rec.dtype == bool
    # batch independence: one mask alone gets the same codes as inside the batch
    assert (codec.encode(img, masks[:1]) == codes[:1]).all()
    many = codec.encode_batch([s[0] for s in scenes], [s[1] for s in scenes])
    assert (many[0] == codes).all()
    # decoding from the first code alone works (second = -1)
    assert codec.decode(img, [[int(codes[0, 0]), -1]]).shape == (1, *masks.shape[1:])
    assert codec.decode(img, np.zeros((0, 2))).shape == (0, *masks.shape[1:])
    with pytest.raises(ValueError, match="do not match image"):
        codec.encode(img, masks[:, :10])
    empty = np.zeros_like(masks[:1])
    with pytest.raises(ValueError, match="empty mask"):
        codec.encode(img, empty)


def test_overfit_reconstruction_well_above_chance(trained_codec):
    path, scenes = trained_codec
    ious = reconstruction_iou(BuiltinCodec.load(path), scenes)
    assert statistics.mean(ious) > 0.6, ious


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = MaskTokenizer(CodecConfig(codebook_size=8, dim=32, seed=5))
    save_checkpoint(tmp_path / "c.pt", model)
    loaded = BuiltinCodec.load(tmp_path / "c.pt")
    assert loaded.cfg == model.cfg
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="train one with"):
        BuiltinCodec.load(tmp_path / "nope.pt")
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a builtin mask codec checkpoint"):
        BuiltinCodec.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="expected 'builtin:PATH'"):
        load_codec("builtin")


def test_resume_continues_the_same_run(tmp_path):
    cfg = CodecConfig(codebook_size=16, seed=1)

    def trainer(out, steps):
        return CodecTrainer(out, cfg, TrainConfig(steps=steps, images_per_batch=2,
                                                  masks_per_image=2, warmup=2, save_every=3,
                                                  seed=1),
                            synthetic_scenes(1))

    straight = trainer(tmp_path / "a", 6)
    straight.run()
    first = trainer(tmp_path / "b", 3)
    first.run()
    resumed = trainer(tmp_path / "b", 6)
    assert resumed.resume() and resumed.step == 3
    resumed.run()
    losses_a = [r["loss"] for r in straight.history]
    losses_b = [r["loss"] for r in resumed.history]
    assert losses_b == pytest.approx(losses_a, rel=1e-5)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    other = CodecTrainer(tmp_path / "b", CodecConfig(codebook_size=8),
                         TrainConfig(steps=1), synthetic_scenes(1))
    with pytest.raises(ValueError, match="another config"):
        other.resume()


def test_synthetic_scenes_are_seeded():
    a = list(itertools.islice(synthetic_scenes(7), 3))
    b = list(itertools.islice(synthetic_scenes(7), 3))
    for (ia, ma), (ib, mb) in zip(a, b, strict=True):
        assert np.array_equal(ma, mb)
        assert np.array_equal(np.asarray(ia), np.asarray(ib)), "pixels must be seeded too"


class _RunsCode:
    """A pickled object whose unpickling calls a function: what a malicious file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).write_text, ("code ran",))


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    from svp.masktok.codec.builtin import CHECKPOINT_FORMAT

    marker = tmp_path / "pwned"
    model = MaskTokenizer(CodecConfig(codebook_size=8))
    evil = {"format": CHECKPOINT_FORMAT, "config": {}, "model": model.state_dict(),
            "extra": _RunsCode(marker)}
    torch.save(evil, tmp_path / "codec.pt")
    with pytest.raises(ValueError, match="refused to load.*could run arbitrary code"):
        BuiltinCodec.load(tmp_path / "codec.pt")
    torch.save({**evil, "optimizer": {}}, tmp_path / "last.pt")  # a training state too
    trainer = CodecTrainer(tmp_path, CodecConfig(codebook_size=8), TrainConfig(steps=1),
                           synthetic_scenes(1))
    with pytest.raises(ValueError, match="refused to load"):
        trainer.resume()
    assert not marker.exists(), "unpickling ran the payload"


def test_checkpoints_in_the_existing_format_load_with_weights_only(tmp_path):
    """What train_mask_codec.py has always written (weights, config, AdamW state, Python and
    torch RNG states, history) is made of allow-listed types: old files load unchanged."""
    import random

    from svp.masktok.codec.builtin import CHECKPOINT_FORMAT

    cfg = CodecConfig(codebook_size=8)
    model = MaskTokenizer(cfg)
    opt = torch.optim.AdamW(model.parameters())
    model(*make_batch(synthetic_scenes(0), cfg, TrainConfig(images_per_batch=1,
                                                             masks_per_image=1),
                      random.Random(0)))["loss"].backward()
    opt.step()
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "step": 1, "rng": random.Random(3).getstate(),
                "vq_rng": torch.Generator().get_state(), "torch_rng": torch.get_rng_state(),
                "scenes_drawn": 1, "train_config": asdict(TrainConfig()),
                "history": [{"step": 1, "loss": 0.5}]}, tmp_path / "old.pt")
    loaded = BuiltinCodec.load(tmp_path / "old.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.model.state_dict().values(), strict=True))
