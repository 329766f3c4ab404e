"""Single-process training of the builtin mask tokenizer (no torch.distributed needed).

Data: synthetic scenes by default (several shapes on textured backgrounds, occluding each
other), or COCO-style instance annotations. Everything is seeded; the trainer checkpoints
model, optimiser, step and random states so ``resume`` continues the same run.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from svp.masktok.coco import annotation_to_mask
from svp.masktok.codec.base import masks_to_boxes
from svp.masktok.codec.builtin import (
    BuiltinCodec,
    CodecConfig,
    MaskTokenizer,
    load_checkpoint_state,
    normalised_boxes,
    preprocess_image,
    preprocess_masks,
    save_checkpoint,
)
from svp.masktok.codec.scenes import draw_shapes_scene

Scene = tuple[object, np.ndarray]  # (image, masks [K, H, W] bool)


@dataclass
class TrainConfig:
    steps: int = 1500
    images_per_batch: int = 8
    masks_per_image: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 250
    eval_masks: int = 200
    threads: int = 0  # 0: leave torch's default


def synthetic_scenes(seed: int) -> Iterator[Scene]:
    """An endless, seeded stream of synthetic scenes of varied size and aspect."""
    rng = random.Random(seed)
    while True:
        w, h = rng.choice([(128, 128), (160, 120), (120, 160), (192, 128), (96, 96)])
        img, masks, _ = draw_shapes_scene(rng, w, h, rng.randint(1, 5))
        if len(masks):
            yield img, masks


def coco_scenes(annotation_file: str | Path, image_dir: str | Path, seed: int,
                min_area: int = 64) -> Iterator[Scene]:
    """An endless, seeded stream of (image, instance masks) from COCO-style annotations."""
    from PIL import Image

    data = json.loads(Path(annotation_file).read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        if not ann.get("iscrowd") and ann.get("area", min_area) >= min_area:
            by_image.setdefault(ann["image_id"], []).append(ann)
    images = [im for im in data.get("images", []) if im["id"] in by_image]
    if not images:
        raise ValueError(f"{annotation_file}: no images with usable instance annotations")
    rng = random.Random(seed)
    while True:
        info = rng.choice(images)
        path = Path(image_dir) / info["file_name"]
        img = Image.open(path).convert("RGB")
        h, w = info["height"], info["width"]
        masks = np.stack([annotation_to_mask(a["segmentation"], h, w)
                          for a in by_image[info["id"]]])
        masks = masks[masks.reshape(len(masks), -1).sum(1) >= min_area]
        if len(masks):
            yield img, masks


def make_batch(scenes: Iterator[Scene], cfg: CodecConfig, tcfg: TrainConfig,
               rng: random.Random):
    """Stack ``images_per_batch`` scenes and up to ``masks_per_image`` masks of each."""
    pixels, idx, mask_in, boxes = [], [], [], []
    for i in range(tcfg.images_per_batch):
        img, masks = next(scenes)
        pick = rng.sample(range(len(masks)), min(len(masks), tcfg.masks_per_image))
        m = masks[pick]
        pixels.append(preprocess_image(img, cfg.image_size))
        idx += [i] * len(m)
        mask_in.append(preprocess_masks(m, cfg.out_size))
        h, w = m.shape[1:]
        boxes.append(normalised_boxes(masks_to_boxes(m), w, h))
    mask_in_t = torch.cat(mask_in)
    return (torch.stack(pixels), torch.tensor(idx), mask_in_t, torch.cat(boxes),
            (mask_in_t[:, 0] > 0.5).float())


def reconstruction_iou(codec: BuiltinCodec, scenes: list[Scene]) -> list[float]:
    """Per-mask IoU of decode(encode(mask)) at the image's own resolution."""
    ious = []
    for img, masks in scenes:
        codes = codec.encode(img, masks)
        rec = codec.decode(img, codes)
        for m, r in zip(masks, rec, strict=True):
            inter = np.logical_and(m, r).sum()
            union = np.logical_or(m, r).sum()
            ious.append(float(inter / union) if union else 1.0)
    return ious


def heldout_synthetic(n_masks: int, seed: int = 10_000) -> list[Scene]:
    """Held-out scenes (a seed stream the trainer never uses) holding ``n_masks`` masks."""
    out, total = [], 0
    for img, masks in synthetic_scenes(seed):
        out.append((img, masks))
        total += len(masks)
        if total >= n_masks:
            return out
    raise AssertionError("unreachable")


class CodecTrainer:
    """Owns model, optimiser and data stream; ``run`` trains with periodic checkpoints."""

    def __init__(self, out_dir: str | Path, cfg: CodecConfig | None = None,
                 tcfg: TrainConfig | None = None, scenes: Iterator[Scene] | None = None):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.tcfg = tcfg or TrainConfig()
        if self.tcfg.threads:
            torch.set_num_threads(self.tcfg.threads)
        self.cfg = cfg or CodecConfig(seed=self.tcfg.seed)
        self.model = MaskTokenizer(self.cfg)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.tcfg.lr,
                                     weight_decay=self.tcfg.weight_decay)
        self.step = 0
        self.rng = random.Random(self.tcfg.seed)
        self.scenes = scenes if scenes is not None else synthetic_scenes(self.tcfg.seed)
        self.history: list[dict] = []

    @property
    def state_path(self) -> Path:
        return self.out / "last.pt"

    def lr_at(self, step: int) -> float:
        t = self.tcfg
        if step < t.warmup:
            return t.lr * (step + 1) / t.warmup
        frac = (step - t.warmup) / max(1, t.steps - t.warmup)
        return t.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    def resume(self) -> bool:
        """Continue from ``last.pt`` when present (same config required)."""
        if not self.state_path.is_file():
            return False
        state = load_checkpoint_state(self.state_path)
        if CodecConfig(**state["config"]) != self.cfg:
            raise ValueError(f"{self.state_path} was trained with another config: "
                             f"{state['config']}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.rng.setstate(state["rng"])
        self.model.quantizer._gen.set_state(state["vq_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history = state.get("history", [])
        # The scene stream is replayed to the same position so the data order is unchanged.
        for _ in range(state["scenes_drawn"]):
            next(self.scenes)
        self._scenes_drawn = state["scenes_drawn"]
        return True

    def save(self) -> None:
        save_checkpoint(self.state_path, self.model, {
            "optimizer": self.opt.state_dict(), "step": self.step, "rng": self.rng.getstate(),
            "vq_rng": self.model.quantizer._gen.get_state(), "torch_rng": torch.get_rng_state(),
            "scenes_drawn": self._scenes_drawn, "train_config": asdict(self.tcfg),
            "history": self.history})

    def run(self, progress: Callable[[int, dict], None] | None = None) -> Path:
        """Train up to ``steps``; returns the path of the final weights (``codec.pt``)."""
        self._scenes_drawn = getattr(self, "_scenes_drawn", 0)
        self.model.train()
        t0 = time.time()
        while self.step < self.tcfg.steps:
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
            batch = make_batch(self.scenes, self.cfg, self.tcfg, self.rng)
            self._scenes_drawn += self.tcfg.images_per_batch
            out = self.model(*batch)
            self.opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
            self.opt.step()
            self.step += 1
            with torch.no_grad():
                pred = out["logits"] > 0
                tgt = batch[4] > 0.5
                inter = (pred & tgt).flatten(1).sum(1).float()
                union = (pred | tgt).flatten(1).sum(1).clamp(min=1).float()
                used0 = out["codes"][:, 0].unique().numel()
            row = {"step": self.step, "loss": out["loss"].item(), "bce": out["bce"].item(),
                   "dice": out["dice"].item(), "commit": out["commit"].item(),
                   "train_iou": float((inter / union).mean()), "codes_used_l0": used0,
                   "lr": self.lr_at(self.step - 1), "elapsed_s": round(time.time() - t0, 1)}
            self.history.append(row)
            if progress:
                progress(self.step, row)
            if self.step % self.tcfg.save_every == 0 or self.step == self.tcfg.steps:
                self.save()
        self.model.eval()
        final = self.out / "codec.pt"
        save_checkpoint(final, self.model, {"train_config": asdict(self.tcfg),
                                            "steps": self.step})
        return final
