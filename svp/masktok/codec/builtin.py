"""Our own SAM-style mask tokenizer at small scale, trainable on one CPU.

Same structure as SAMTok's VQ-SAM2, shrunk: an image encoder; a prompt of box corners
(Fourier position encoding + learned corner embeddings) and of the mask itself (strided
convs, added to the image features); a mask encoder whose learned query reads the prompted
features through a two-way transformer and becomes one vector z; a two-step residual vector
quantizer with two separate 256-entry EMA codebooks and dead-code restart; and a mask
decoder prompted by the summed code embeddings that attends the image features and
upsamples to logits at half the input resolution. Loss: 2.0 BCE + 0.5 Dice + 0.25
commitment. Unlike the upstream code, nothing needs ``torch.distributed``: the EMA
statistics are all-reduced only when a process group exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from svp.common.io import atomic_path
from svp.masktok.codec.base import (
    ImageLike,
    MaskCodec,
    masks_to_boxes,
    squash_normalise,
    to_rgb_array,
)

CHECKPOINT_FORMAT = "svp-builtin-mask-codec/1"


@dataclass(frozen=True)
class CodecConfig:
    """Everything that shapes the network; stored in every checkpoint."""

    image_size: int = 128  # the image is squashed to image_size x image_size (as SAMTok does)
    dim: int = 64
    heads: int = 4
    mlp_dim: int = 256
    enc_depth: int = 2
    dec_depth: int = 2
    codebook_size: int = 256
    codebook_depth: int = 2
    ema_decay: float = 0.99
    dead_code_fraction: float = 0.03  # restart codes used < 3% as often as the average one
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    commit_weight: float = 0.25
    threshold: float = 0.0  # on logits; trained with BCE, so 0 is p = 0.5
    seed: int = 0

    @property
    def grid(self) -> int:  # feature grid side (stride 8)
        return self.image_size // 8

    @property
    def out_size(self) -> int:  # logit map side (stride 2)
        return self.image_size // 2


# ----------------------------------------------------------------------------------------------
# Building blocks


def _gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1), _gn(cout), nn.GELU())


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), _gn(ch), nn.GELU(),
                                  nn.Conv2d(ch, ch, 3, 1, 1), _gn(ch))

    def forward(self, x):
        return F.gelu(x + self.body(x))


class ImageEncoder(nn.Module):
    """Strided convs: features at stride 8 plus stride-4 / stride-2 maps for upsampling."""

    def __init__(self, dim: int):
        super().__init__()
        self.s2 = _ConvBlock(3, dim // 4, 2)
        self.s4 = _ConvBlock(dim // 4, dim // 2, 2)
        self.s8 = nn.Sequential(_ConvBlock(dim // 2, dim, 2), _ResBlock(dim), _ResBlock(dim))

    def forward(self, x):
        f2 = self.s2(x)
        f4 = self.s4(f2)
        return self.s8(f4), f4, f2


class FourierPositions(nn.Module):
    """Random Fourier features of (x, y) in [0, 1] (fixed, seeded Gaussian projection)."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(2, dim // 2, generator=gen))

    def forward(self, xy):  # [..., 2] -> [..., dim]
        t = 2 * math.pi * (2 * xy - 1) @ self.proj
        return torch.cat([t.sin(), t.cos()], dim=-1)

    def grid(self, side: int):  # [side*side, dim], row-major
        c = (torch.arange(side, device=self.proj.device, dtype=torch.float32) + 0.5) / side
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        return self(torch.stack([xx, yy], dim=-1).reshape(-1, 2))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, q, k, v):
        return self.attn(q, k, v, need_weights=False)[0]


class TwoWayBlock(nn.Module):
    """Tokens self-attend, read the image, pass an MLP; then the image reads the tokens."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.self_attn = _Attention(dim, heads)
        self.tok_to_img = _Attention(dim, heads)
        self.img_to_tok = _Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))

    def forward(self, tok, img, tok_pe, img_pe):
        q = tok + tok_pe
        tok = self.norms[0](tok + self.self_attn(q, q, tok))
        tok = self.norms[1](tok + self.tok_to_img(tok + tok_pe, img + img_pe, img))
        tok = self.norms[2](tok + self.mlp(tok))
        img = self.norms[3](img + self.img_to_tok(img + img_pe, tok + tok_pe, tok))
        return tok, img


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim) for _ in range(depth))
        self.final = _Attention(dim, heads)
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, tok, img, img_pe):
        tok_pe = tok
        for blk in self.blocks:
            tok, img = blk(tok, img, tok_pe, img_pe)
        tok = self.final_norm(tok + self.final(tok + tok_pe, img + img_pe, img))
        return tok, img


class ResidualVQ(nn.Module):
    """Residual vector quantizer: ``depth`` separate EMA codebooks of ``size`` entries.

    Codebooks are buffers updated by exponential moving averages (no gradient). An entry
    whose EMA usage falls below ``dead_fraction`` of the average entry's is restarted from
    the batch's residuals (seeded generator). The threshold is relative because the EMA
    count is a per-step rate: with a CPU batch of ~30 masks and 256 entries the average is
    ~0.1, so an absolute threshold of 1 (upstream, batch 1024) would restart every entry on
    every step. Starting counts are zero, so the first batches seed the codebooks from data.
    Statistics are all-reduced only when ``torch.distributed`` is initialised.
    """

    def __init__(self, depth: int, size: int, dim: int, decay: float, dead_fraction: float,
                 seed: int):
        super().__init__()
        self.depth, self.size, self.dim = depth, size, dim
        self.decay, self.dead_fraction = decay, dead_fraction
        gen = torch.Generator().manual_seed(seed + 1)
        embed = torch.randn(depth, size, dim, generator=gen) * 0.1
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(depth, size))
        self.register_buffer("embed_sum", torch.zeros(depth, size, dim))
        self._gen = torch.Generator().manual_seed(seed + 2)

    def forward(self, x):
        """x [B, dim] -> (x_q straight-through [B, dim], codes [B, depth], commitment loss)."""
        residual = x.detach()
        cum = torch.zeros_like(residual)
        codes, commit = [], x.new_zeros(())
        for d in range(self.depth):
            book = self.embed[d]
            dist = (residual.pow(2).sum(1, keepdim=True) - 2 * residual @ book.t()
                    + book.pow(2).sum(1)[None])
            idx = dist.argmin(1)
            q = book[idx]
            if self.training:
                self._ema_update(d, residual, idx)
            cum = cum + q
            commit = commit + F.mse_loss(x, cum.detach())
            residual = residual - q
            codes.append(idx)
        x_q = x + (cum - x).detach()
        return x_q, torch.stack(codes, 1), commit / self.depth

    @torch.no_grad()
    def _ema_update(self, d: int, inputs, idx) -> None:
        onehot = F.one_hot(idx, self.size).type(inputs.dtype)
        counts = onehot.sum(0)
        sums = onehot.t() @ inputs
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.cluster_size[d].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum[d].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        used = self.cluster_size[d] > 0
        n = self.cluster_size[d].sum()
        smoothed = (self.cluster_size[d] + 1e-5) / (n + self.size * 1e-5) * n
        self.embed[d][used] = self.embed_sum[d][used] / smoothed[used, None]
        dead = self.cluster_size[d] < self.dead_fraction * self.cluster_size[d].mean()
        if dead.any():
            n_dead = int(dead.sum())
            pick = torch.randint(0, inputs.shape[0], (n_dead,), generator=self._gen)
            noise = torch.randn(n_dead, self.dim, generator=self._gen) * 1e-3
            fresh = inputs[pick].cpu() + noise
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                fresh = fresh.to(inputs.device)
                torch.distributed.broadcast(fresh, 0)
            fresh = fresh.to(inputs.device)
            mean_count = self.cluster_size[d].mean()
            self.embed[d][dead] = fresh
            self.embed_sum[d][dead] = fresh * mean_count
            self.cluster_size[d][dead] = mean_count

    def embed_codes(self, codes):
        """Sum of the code embeddings; a code of -1 contributes nothing (input untouched)."""
        out = torch.zeros(codes.shape[0], self.dim, device=self.embed.device)
        for d in range(min(self.depth, codes.shape[1])):
            c = codes[:, d]
            valid = c >= 0
            if valid.any():
                out[valid] += self.embed[d][c[valid]]
        return out


# ----------------------------------------------------------------------------------------------
# The model


class MaskTokenizer(nn.Module):
    """Image + mask + box -> codes [N, 2]; image + codes -> mask logits."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        d = cfg.dim
        self.image_encoder = ImageEncoder(d)
        self.pe = FourierPositions(d, cfg.seed)
        self.corner_embed = nn.Embedding(2, d)
        self.mask_downscale = nn.Sequential(  # out_size (4 x grid) -> grid, as SAM's
            nn.Conv2d(1, 4, 2, 2), _gn(4), nn.GELU(), nn.Conv2d(4, 16, 2, 2), _gn(16), nn.GELU(),
            nn.Conv2d(16, d, 1))
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.mask_encoder = TwoWayTransformer(cfg.enc_depth, d, cfg.heads, cfg.mlp_dim)
        self.to_latent = nn.Linear(d, d)
        self.quantizer = ResidualVQ(cfg.codebook_depth, cfg.codebook_size, d, cfg.ema_decay,
                                    cfg.dead_code_fraction, cfg.seed)
        self.no_mask_embed = nn.Parameter(torch.zeros(1, d, 1, 1))
        self.out_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.code_type = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.mask_decoder = TwoWayTransformer(cfg.dec_depth, d, cfg.heads, cfg.mlp_dim)
        self.up1 = nn.ConvTranspose2d(d, d // 2, 2, 2)
        self.skip4 = nn.Conv2d(d // 2, d // 2, 1)
        self.norm1 = _gn(d // 2)
        self.up2 = nn.ConvTranspose2d(d // 2, d // 4, 2, 2)
        self.skip2 = nn.Conv2d(d // 4, d // 4, 1)
        self.hyper = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d // 4))

    # -- pieces ---------------------------------------------------------------------------------
    def image_features(self, pixels):
        """pixels [B,3,S,S] normalised -> (feat [B,d,g,g], f4, f2)."""
        return self.image_encoder(pixels)

    def _flat(self, feat):
        return feat.flatten(2).transpose(1, 2)  # [B, g*g, d]

    def encode_latent(self, feats, img_idx, mask_in, boxes):
        """feats from image_features; img_idx [N]; mask_in [N,1,o,o] in [0,1]; boxes [N,4]
        normalised xyxy. Returns z [N, d]."""
        feat = feats[0][img_idx] + self.mask_downscale(mask_in)
        corners = boxes.view(-1, 2, 2)
        sparse = self.pe(corners) + self.corner_embed.weight[None]
        tok = torch.cat([self.query.expand(len(boxes), -1, -1), sparse], dim=1)
        img_pe = self.pe.grid(self.cfg.grid)[None]
        tok, _ = self.mask_encoder(tok, self._flat(feat), img_pe)
        return self.to_latent(tok[:, 0])

    def decode_logits(self, feats, img_idx, z):
        """z [N, d] (quantised or summed code embeddings) -> logits [N, o, o]."""
        feat, f4, f2 = (f[img_idx] for f in feats)
        g = self.cfg.grid
        img = self._flat(feat + self.no_mask_embed)
        tok = torch.cat([self.out_token.expand(len(z), -1, -1),
                         z[:, None] + self.code_type], dim=1)
        tok, img = self.mask_decoder(tok, img, self.pe.grid(g)[None])
        x = img.transpose(1, 2).reshape(len(z), -1, g, g)
        x = F.gelu(self.norm1(self.up1(x) + self.skip4(f4)))
        x = F.gelu(self.up2(x) + self.skip2(f2))
        w = self.hyper(tok[:, 0])
        return torch.einsum("nc,nchw->nhw", w, x)

    def forward(self, pixels, img_idx, mask_in, boxes, target=None):
        """Training forward: returns dict with loss terms, logits and codes."""
        feats = self.image_features(pixels)
        z = self.encode_latent(feats, img_idx, mask_in, boxes)
        z_q, codes, commit = self.quantizer(z)
        logits = self.decode_logits(feats, img_idx, z_q)
        out = {"logits": logits, "codes": codes, "commit": commit}
        if target is not None:
            bce = F.binary_cross_entropy_with_logits(logits, target)
            p = logits.sigmoid().flatten(1)
            t = target.flatten(1)
            dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()
            cfg = self.cfg
            out.update(bce=bce, dice=dice,
                       loss=cfg.bce_weight * bce + cfg.dice_weight * dice
                       + cfg.commit_weight * commit)
        return out


# ----------------------------------------------------------------------------------------------
# Pre-processing shared by training and the codec


def preprocess_image(image: ImageLike, size: int) -> torch.Tensor:
    """Squash to size x size (aspect not kept, as SAMTok's DirectResize), ImageNet-normalise."""
    return squash_normalise(to_rgb_array(image), size, Image.BILINEAR)


def preprocess_masks(masks: np.ndarray, size: int) -> torch.Tensor:
    """[N,H,W] -> area fractions [N,1,size,size] (antialiased), the mask prompt / target."""
    m = torch.from_numpy(np.asarray(masks, dtype=np.float32))[:, None]
    if m.shape[0] == 0:
        return m.new_zeros((0, 1, size, size))
    return F.interpolate(m, size=(size, size), mode="area")


def normalised_boxes(boxes: np.ndarray, width: int, height: int) -> torch.Tensor:
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    return b / torch.tensor([width, height, width, height], dtype=torch.float32)


class BuiltinCodec(MaskCodec):
    """The trained :class:`MaskTokenizer` behind the :class:`MaskCodec` interface."""

    name = "builtin"

    def __init__(self, model: MaskTokenizer, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.cfg = model.cfg
        self.threshold = model.cfg.threshold
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> BuiltinCodec:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"builtin mask codec checkpoint not found: {path} "
                                    "(train one with data_tools/train_mask_codec.py)")
        state = load_checkpoint_state(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a builtin mask codec checkpoint "
                             f"(expected format {CHECKPOINT_FORMAT!r})")
        known = set(CodecConfig.__dataclass_fields__)
        unknown = set(state["config"]) - known
        if unknown:
            raise ValueError(f"{path}: config fields {sorted(unknown)} are unknown to this "
                             "version of the codec (trained by another version?)")
        model = MaskTokenizer(CodecConfig(**state["config"]))
        model.load_state_dict(state["model"])
        return cls(model, device=device)

    # -- helpers ----------------------------------------------------------------------------
    def _prepare(self, images: Sequence[ImageLike]):
        arrays = [to_rgb_array(im) for im in images]
        pixels = torch.stack([preprocess_image(a, self.cfg.image_size) for a in arrays])
        return arrays, pixels.to(self.device)

    @torch.no_grad()
    def encode_batch(self, images, masks, boxes=None):
        arrays, pixels = self._prepare(images)
        boxes = boxes or [None] * len(images)
        idx, mask_in, norm_boxes = [], [], []
        for i, (arr, m, b) in enumerate(zip(arrays, masks, boxes, strict=True)):
            m = np.asarray(m).astype(bool)
            if m.ndim != 3 or m.shape[1:] != arr.shape[:2]:
                raise ValueError(f"image {i}: masks {m.shape} do not match image "
                                 f"{arr.shape[:2]} (expected [N, H, W])")
            b = masks_to_boxes(m) if b is None else np.asarray(b, dtype=np.float32)
            if np.isnan(b).any():
                raise ValueError(f"image {i}: an empty mask has no box; drop it before encoding")
            idx += [i] * len(m)
            mask_in.append(preprocess_masks(m, self.cfg.out_size))
            norm_boxes.append(normalised_boxes(b, arr.shape[1], arr.shape[0]))
        if not idx:
            return [np.zeros((0, 2), np.int64) for _ in images]
        feats = self.model.image_features(pixels)
        img_idx = torch.tensor(idx, device=self.device)
        z = self.model.encode_latent(feats, img_idx, torch.cat(mask_in).to(self.device),
                                     torch.cat(norm_boxes).to(self.device))
        _, codes, _ = self.model.quantizer(z)
        codes = codes.cpu().numpy().astype(np.int64)
        out, start = [], 0
        for m in masks:
            out.append(codes[start:start + len(m)])
            start += len(m)
        return out

    def encode(self, image, masks, boxes=None):
        return self.encode_batch([image], [masks], None if boxes is None else [boxes])[0]

    @torch.no_grad()
    def decode_logits(self, image: ImageLike, codes) -> torch.Tensor:
        """Low-resolution logits [N, o, o] for the codes (o = image_size / 2)."""
        codes_t = torch.as_tensor(np.asarray(codes, dtype=np.int64).reshape(-1, 2),
                                  device=self.device)
        if len(codes_t) == 0:
            o = self.cfg.out_size
            return torch.zeros(0, o, o)
        _, pixels = self._prepare([image])
        feats = self.model.image_features(pixels)
        z = self.model.quantizer.embed_codes(codes_t)
        img_idx = torch.zeros(len(codes_t), dtype=torch.long, device=self.device)
        return self.model.decode_logits(feats, img_idx, z)


def load_checkpoint_state(path: str | Path) -> dict:
    """A checkpoint's contents, unpickled with ``weights_only=True``: tensors, numbers,
    strings and containers only. A file that holds any other Python object (which unpickling
    would construct, i.e. run code from) is refused with a clear error instead.

    Every checkpoint this project writes (weights, config, optimizer and RNG states, history)
    is made of those types, so files written by earlier versions load unchanged.
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain "
            f"values, and unpickling them could run arbitrary code. A mask codec checkpoint "
            f"written by data_tools/train_mask_codec.py never does; if you trust this file "
            f"and it really is one, re-save its weights with a trusted script. "
            f"({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a builtin mask codec checkpoint (not a dict)")
    return state


def save_checkpoint(path: str | Path, model: MaskTokenizer, extra: dict | None = None) -> None:
    """Atomic save of weights + config (+ training state in ``extra``)."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(model.cfg),
                    "model": model.state_dict(), **(extra or {})}, tmp)
