#!/usr/bin/env python
"""Builtin mask codec: reconstruction IoU and encode / decode throughput on this machine.

    python bench/bench_mask_codec.py --out runs/bench_codec --train-steps 4000
    python bench/bench_mask_codec.py --codec runs/codec/codec.pt        # evaluate only

Trains the codec with data_tools/train_mask_codec.py's trainer (resuming when OUT already
holds part of the run), then measures:
- IoU of decode(encode(mask)) on held-out synthetic scenes (a seed stream training never
  sees), overall and by mask size;
- IoU on the real COCO polygons of tests/fixtures/coco_sample, painted on a textured
  stand-in picture of the recorded size (the photographs are not shipped);
- encode and decode throughput in masks/s (batched, medians of repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

from svp.masktok.coco import annotation_to_mask
from svp.masktok.codec.builtin import BuiltinCodec
from svp.masktok.codec.train import (
    CodecTrainer,
    TrainConfig,
    heldout_synthetic,
    reconstruction_iou,
)

REPO = Path(__file__).resolve().parents[1]


def coco_fixture_scene():
    """The fixture's polygons (image 98304) painted on a textured stand-in of its size."""
    from PIL import Image

    from svp.masktok.codec.scenes import textured_background
    from tests.helpers import coco_fixture

    inst = json.loads(coco_fixture().read_text())
    im = next(i for i in inst["images"] if i["id"] == 98304)
    h, w = im["height"], im["width"]
    rng = random.Random(0)
    img = np.asarray(textured_background(rng, w, h)).copy()
    masks = []
    for ann in inst["annotations"]:
        m = annotation_to_mask(ann["segmentation"], h, w)
        img[m] = [rng.randint(0, 255) for _ in range(3)]
        masks.append(m)
    return Image.fromarray(img), np.stack(masks), [a["id"] for a in inst["annotations"]]


def throughput(codec: BuiltinCodec, scenes, repeats: int = 3) -> tuple[float, float]:
    images = [s[0] for s in scenes]
    masks = [s[1] for s in scenes]
    n = sum(len(m) for m in masks)
    enc_t, dec_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        codes = codec.encode_batch(images, masks)
        enc_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for img, c in zip(images, codes, strict=True):
            codec.decode(img, c)
        dec_t.append(time.perf_counter() - t0)
    return n / statistics.median(enc_t), n / statistics.median(dec_t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_codec")
    ap.add_argument("--train-steps", type=int, default=4000)
    ap.add_argument("--codec", help="evaluate this checkpoint instead of training")
    ap.add_argument("--eval-masks", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    t_train = 0.0
    if args.codec:
        path = Path(args.codec)
    else:
        from tqdm import tqdm

        trainer = CodecTrainer(args.out, tcfg=TrainConfig(steps=args.train_steps))
        trainer.resume()
        t0 = time.time()
        with tqdm(total=args.train_steps, initial=trainer.step, desc="train codec") as bar:
            path = trainer.run(lambda step, row: bar.update(1))
        t_train = time.time() - t0
    codec = BuiltinCodec.load(path)
    scenes = heldout_synthetic(args.eval_masks)
    ious, areas = [], []
    for img, masks in scenes:
        ious += reconstruction_iou(codec, [(img, masks)])
        areas += list(masks.reshape(len(masks), -1).mean(1))
    ious_a, areas_a = np.array(ious), np.array(areas)
    buckets = {"small (<2% of image)": areas_a < 0.02,
               "medium (2-10%)": (areas_a >= 0.02) & (areas_a < 0.10),
               "large (>=10%)": areas_a >= 0.10}
    img, masks, ann_ids = coco_fixture_scene()
    coco_ious = reconstruction_iou(codec, [(img, masks)])
    enc, dec = throughput(codec, scenes[:40])
    print(f"\ncodec {path} ({codec.cfg.codebook_depth} x {codec.cfg.codebook_size}, "
          f"{sum(p.numel() for p in codec.model.parameters()) / 1e6:.2f} M params)"
          + (f", trained {args.train_steps} steps here in {t_train:.0f} s" if t_train else ""))
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print(f"{'held-out synthetic masks':<28} {len(ious):>5}  mean IoU {ious_a.mean():.3f}  "
          f"median {np.median(ious_a):.3f}")
    for name, sel in buckets.items():
        if sel.any():
            print(f"  {name:<26} {int(sel.sum()):>5}  mean IoU {ious_a[sel].mean():.3f}")
    for a, iou, m in zip(ann_ids, coco_ious, masks, strict=True):
        print(f"COCO fixture ann {a:<9} area {int(m.sum()):>6} px  IoU {iou:.3f}")
    print(f"COCO fixture mean IoU {statistics.mean(coco_ious):.3f}")
    print(f"encode {enc:,.0f} masks/s   decode {dec:,.0f} masks/s   (batched, median of 3)")
    result = {"checkpoint": str(path), "heldout_mean_iou": float(ious_a.mean()),
              "heldout_median_iou": float(np.median(ious_a)), "heldout_masks": len(ious),
              "buckets": {k: float(ious_a[v].mean()) for k, v in buckets.items() if v.any()},
              "coco_fixture_ious": dict(zip(map(str, ann_ids), coco_ious, strict=True)),
              "encode_masks_per_s": enc, "decode_masks_per_s": dec, "train_s": t_train}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
