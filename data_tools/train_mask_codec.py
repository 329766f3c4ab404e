#!/usr/bin/env python
"""Train the builtin mask codec (2 x 256 residual VQ) on one CPU or GPU, single process.

    python data_tools/train_mask_codec.py --out runs/codec --steps 1500
    python data_tools/train_mask_codec.py --out runs/codec --coco instances.json --images DIR
    python data_tools/train_mask_codec.py --out runs/codec --steps 3000 --resume

Synthetic scenes (shapes on textured backgrounds) by default; COCO-style instance
annotations (polygons or RLE) when --coco is given. Writes OUT/last.pt (resumable state,
every --save-every steps), OUT/codec.pt (weights + config: use as --codec builtin:OUT/codec.pt)
and OUT/metrics.json (held-out reconstruction IoU), atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from svp.common.io import write_atomic
from svp.masktok.codec.builtin import BuiltinCodec, CodecConfig
from svp.masktok.codec.train import (
    CodecTrainer,
    TrainConfig,
    coco_scenes,
    heldout_synthetic,
    reconstruction_iou,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--images-per-batch", type=int, default=TrainConfig.images_per_batch)
    ap.add_argument("--masks-per-image", type=int, default=TrainConfig.masks_per_image)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=TrainConfig.save_every)
    ap.add_argument("--image-size", type=int, default=CodecConfig.image_size)
    ap.add_argument("--dim", type=int, default=CodecConfig.dim)
    ap.add_argument("--codebook-size", type=int, default=CodecConfig.codebook_size)
    ap.add_argument("--coco", help="COCO-style instances JSON (else synthetic scenes)")
    ap.add_argument("--images", help="image folder for --coco")
    ap.add_argument("--eval-masks", type=int, default=200,
                    help="held-out synthetic masks for the final IoU (0: skip)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    cfg = CodecConfig(image_size=args.image_size, dim=args.dim,
                      codebook_size=args.codebook_size, seed=args.seed)
    tcfg = TrainConfig(steps=args.steps, lr=args.lr, images_per_batch=args.images_per_batch,
                       masks_per_image=args.masks_per_image, seed=args.seed,
                       save_every=args.save_every, threads=args.threads)
    scenes = None
    if args.coco:
        if not args.images:
            ap.error("--coco needs --images")
        scenes = coco_scenes(args.coco, args.images, seed=args.seed)
    trainer = CodecTrainer(args.out, cfg, tcfg, scenes)
    if args.resume and trainer.resume():
        print(f"resumed from {trainer.state_path} at step {trainer.step}")
    bar = tqdm(total=tcfg.steps, initial=trainer.step, desc="train codec", unit="step")

    def progress(step: int, row: dict) -> None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{row['loss']:.3f}", iou=f"{row['train_iou']:.3f}",
                            codes=row["codes_used_l0"])

    final = trainer.run(progress)
    bar.close()
    metrics = {"steps": trainer.step, "checkpoint": str(final)}
    if args.eval_masks:
        codec = BuiltinCodec.load(final)
        ious = reconstruction_iou(codec, heldout_synthetic(args.eval_masks))
        metrics.update(heldout_masks=len(ious), mean_iou=statistics.mean(ious),
                       median_iou=statistics.median(ious))
        print(f"held-out synthetic reconstruction IoU: mean {metrics['mean_iou']:.3f}, "
              f"median {metrics['median_iou']:.3f} over {len(ious)} masks")
    write_atomic(os.path.join(args.out, "metrics.json"), json.dumps(metrics, indent=2))
    print(f"codec weights: {final}  (use --codec builtin:{final})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
