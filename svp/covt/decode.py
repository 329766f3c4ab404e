"""What the visual-thought tokens say, as pictures: the heads and the experts' frozen
decoders applied to the hidden states of one sequence, next to the expert's own output.

Upstream had no packaged way to look at this (Wakals/CoVT issue #22). Note what the
pictures can and cannot show (§4.4): the decoders read the expert's features of the image,
so a good-looking map partly reflects the expert; the figure therefore prints each map's
loss against the expert and the loss of a *zero* token (the decoder with no information
from the model), so the tokens' own contribution is visible.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from svp.covt.compute import thought_positions

PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230)], np.float32)


@torch.no_grad()
def decode_sequence(hidden: torch.Tensor, input_ids: torch.Tensor, pad_ids: dict[str, int],
                    heads, experts: dict, targets: dict[str, dict]) -> dict[str, dict]:
    """For one sequence ([1, T, H] / [1, T]): per expert present in it, the decoded
    prediction, the expert's target, the loss, and the loss of an all-zero head output."""
    out = {}
    for name, expert in experts.items():
        rows, pos, _ = thought_positions(input_ids, pad_ids[name], expert.n_tokens)
        if not rows:
            continue
        z = heads(name, hidden[0, pos[0]][None]).float()
        t = {k: v.to(z.device) for k, v in targets[name].items()}
        pred = expert.decode(z, t)
        out[name] = {"pred": pred[0].cpu(), "target": t, "loss": float(expert.loss(pred, t)),
                     "zero_loss": float(expert.loss(expert.decode(torch.zeros_like(z), t), t))}
    return out


def _gray(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi - lo < 1e-8 else (a - lo) / (hi - lo)


def _turbo(a: np.ndarray) -> np.ndarray:
    """A small perceptual colour map (dark blue -> cyan -> yellow -> red) for depth."""
    x = _gray(a)[..., None]
    stops = np.array([(48, 18, 59), (40, 150, 230), (50, 230, 120), (250, 200, 40),
                      (180, 20, 10)], np.float32)
    idx = np.clip(x * (len(stops) - 1), 0, len(stops) - 1 - 1e-6)
    lo = np.floor(idx).astype(int)[..., 0]
    frac = idx - np.floor(idx)
    return stops[lo] * (1 - frac) + stops[lo + 1] * frac


def _masks_panel(base: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    out = base.copy()
    for i, m in enumerate(masks):
        m = m.astype(bool)
        out[m] = (1 - alpha) * out[m] + alpha * PALETTE[i % len(PALETTE)]
    return out


def render(name: str, result: dict, image: Image.Image, size: int = 256) -> Image.Image:
    """image | decoded from the tokens | the expert's own output, with the losses."""
    base = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
    pred, t = result["pred"].float().numpy(), result["target"]

    def fit(a):
        im = Image.fromarray(a.clip(0, 255).astype(np.uint8))
        return np.asarray(im.resize((size, size), Image.NEAREST), np.float32)

    if name == "sam":
        n = int(t["n_masks"][0])
        decoded = fit(_masks_panel(base, _resize_stack(pred > 0, size)))
        expert = fit(_masks_panel(base, _resize_stack(t["masks"][0][:n].cpu().numpy() > 0.5,
                                                      size)))
    elif name == "depth":
        decoded, expert = fit(_turbo(pred)), fit(_turbo(t["depth"][0].cpu().numpy()))
    elif name == "pidinet":
        decoded = fit(255 * np.repeat(pred[..., None], 3, -1))
        expert = fit(255 * np.repeat(t["edges"][0].cpu().numpy()[..., None], 3, -1))
    else:  # feature experts: no picture, the rows as a heat map
        decoded = fit(255 * np.repeat(_gray(pred)[..., None], 3, -1))
        expert = fit(255 * np.repeat(_gray(t["features"][0].cpu().numpy())[..., None], 3, -1))
    strip = Image.fromarray(np.concatenate([base, decoded, expert], 1).astype(np.uint8))
    draw = ImageDraw.Draw(strip)
    draw.text((4, 2), "image", fill=(255, 255, 255))
    draw.text((size + 4, 2), f"{name} from tokens  loss {result['loss']:.4g}",
              fill=(255, 255, 255))
    draw.text((size + 4, 14), f"(zero tokens: {result['zero_loss']:.4g})", fill=(255, 255, 255))
    draw.text((2 * size + 4, 2), f"{name} expert", fill=(255, 255, 255))
    return strip


def _resize_stack(masks: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(
        (size, size), Image.NEAREST)) > 127 for m in masks]) if len(masks) else np.zeros(
        (0, size, size), bool)
