"""The real experts behind the :class:`~svp.covt.experts.Expert` interface.

Each loads an explicit local checkpoint, named by a variable of :mod:`svp.covt.settings` and
passed in as a path, and stops with a message naming the variable and the file to get when
it is missing (nothing downloads):

======== ========================= ==================================================
expert   variable                  checkpoint (upstream's choice)
======== ========================= ==================================================
sam      SVP_COVT_SAM_CKPT         ``sam_vit_h_4b8939.pth`` (segment-anything; B/L too)
depth    SVP_COVT_DEPTH_CKPT       folder of ``Depth-Anything-V2-Large-hf``
dino     SVP_COVT_DINO_CKPT        folder of ``facebook/dinov2-large``
pidinet  SVP_COVT_PIDINET_CKPT     ``table5_pidinet.pth`` (carv4 PiDiNet, sa + dil)
siglip   SVP_COVT_SIGLIP_CKPT      folder of ``google/siglip2-large-patch16-256``
metaclip SVP_COVT_METACLIP_CKPT    folder of ``facebook/metaclip-h14-fullcc2.5b``
======== ========================= ==================================================

Numerics follow upstream CoVT's expert code with its bugs fixed: the depth expert gets RGB (upstream
fed BGR), PIDINet weights and architecture match (carv4 weights in the carv4 network;
upstream loaded the all-vanilla ``table5_baseline`` through the carv4 converter), and every
expert runs under ``no_grad`` for its targets while gradients reach the tokens through the
frozen decoders. Experts run on CUDA when available, in float32.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from svp.common.images import IMAGENET_MEAN, IMAGENET_STD
from svp.covt import losses
from svp.covt.experts import (
    Expert,
    HeadShape,
    depth_from_tokens,
    edges_from_kernels,
    rgb_batch,
)
from svp.covt.settings import checkpoint_variable

WHAT = {"sam": "the SAM checkpoint file sam_vit_h_4b8939.pth (github.com/facebookresearch/"
               "segment-anything)",
        "depth": "a folder with Depth-Anything-V2-Large-hf (config.json + weights)",
        "dino": "a folder with facebook/dinov2-large",
        "pidinet": "the PiDiNet checkpoint table5_pidinet.pth (github.com/hellozhuo/pidinet)",
        "siglip": "a folder with google/siglip2-large-patch16-256",
        "metaclip": "a folder with facebook/metaclip-h14-fullcc2.5b"}
# head shapes of upstream's checkpoints, used when the checkpoint is not at hand (merging)
DEFAULT_DIMS = {"sam": (256, None), "depth": (1024, None), "dino": (1024, 1025),
                "pidinet": (60, None), "siglip": (1024, 1), "metaclip": (1024, 1)}


def checkpoint(name: str, path: str | Path | None) -> Path:
    """``path`` checked to exist; a missing one is an error naming the variable to set."""
    var = checkpoint_variable(name)
    if not path:
        raise FileNotFoundError(f"CoVT expert {name!r} needs {WHAT[name]}: set {var} to its "
                                f"local path (nothing is downloaded), or use "
                                f"SVP_COVT_BACKEND=standin for a dry run")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{var}={path}: no such file or folder (expected {WHAT[name]})")
    return path


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rgb(images, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
         resample=Image.BICUBIC) -> torch.Tensor:
    """Square-resized, normalised RGB batch [B, 3, size, size]."""
    x = rgb_batch(images, size, resample)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


def _hf_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


class _Captured:
    """Forward hook that keeps a module's last output."""

    def __init__(self, module):
        self.value = None
        module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.value = output


# ----------------------------------------------------------------------------- SAM
def _sam_arch(state: dict, ckpt) -> dict:
    """segment-anything's image-encoder settings, read from a checkpoint's tensors: width
    from the patch embedding, depth from the blocks, heads from the relative-position
    tables (head width), global-attention blocks from their full-size tables. So ViT-B/L/H
    and smaller test encoders all load by the same code."""
    key = "image_encoder.patch_embed.proj.weight"
    if key not in state:
        raise ValueError(f"{ckpt}: not a segment-anything SAM checkpoint ({key} missing)")
    dim = state[key].shape[0]
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")})
    rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in blocks]
    grid = max(r.shape[0] for r in rel)
    return {"encoder_embed_dim": dim, "encoder_depth": len(blocks),
            "encoder_num_heads": dim // rel[0].shape[1],
            "encoder_global_attn_indexes": [i for i, r in zip(blocks, rel, strict=True)
                                            if r.shape[0] == grid]}


class SamExpert(Expert):
    """SAM (segment-anything). Targets: the 64x64 image embedding of the 256x256 image and
    the automatic mask generator's top ``max_masks`` masks by predicted IoU x stability
    (one encoder pass: the embedding is taken from the generator's own run). Decoding:
    each token is one sparse prompt to the frozen mask decoder, with the no-mask dense
    prompt, single-mask output -> 256x256 logits."""

    name, token_dim, res, max_masks = "sam", 256, 256, 8
    version = "2"  # 2: the picture resized bicubic (upstream), was bilinear
    keys, searched, binary = ("embed", "masks", "n_masks"), ("masks", "n_masks"), ("masks",)

    def __init__(self, n_tokens: int = 8, ckpt: Path | None = None, points_per_side: int = 32):
        super().__init__(n_tokens)
        import importlib

        from segment_anything import SamAutomaticMaskGenerator

        ckpt = checkpoint("sam", ckpt)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        sam = importlib.import_module("segment_anything.build_sam")._build_sam(**_sam_arch(state,
                                                                                     ckpt))
        sam.load_state_dict(state, strict=True)
        self.variant = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(
            sam.image_encoder.patch_embed.proj.out_channels, "custom")
        self.sam = sam.to(device()).eval().requires_grad_(False)
        self.amg = SamAutomaticMaskGenerator(self.sam, points_per_side=points_per_side)
        self._embed = _Captured(self.sam.image_encoder)

    def fingerprint(self) -> str:
        return f"{super().fingerprint()}:{self.variant}:pps{self.amg.point_grids[0].shape[0]}"

    def _input(self, image):
        """The 256 x 256 picture SAM sees, as upstream makes it: ``image.resize((256, 256))``,
        PIL's default filter (bicubic); version 1 of the targets used bilinear."""
        return np.asarray(image.convert("RGB").resize((self.res, self.res), Image.BICUBIC))

    @torch.no_grad()
    def complete(self, images, known):
        """The embedding only (one encoder pass through the generator's own predictor, the
        very input and code path of its search); the masks are the cached ones."""
        embeds = []
        for im in images:
            self.amg.predictor.set_image(self._input(im))
            embeds.append(self._embed.value[0].float().cpu())
        return {"embed": torch.stack(embeds),
                "masks": torch.stack([k["masks"] for k in known]).float(),
                "n_masks": torch.stack([k["n_masks"] for k in known]).long()}

    @torch.no_grad()
    def targets(self, images):
        embeds, masks = [], torch.zeros(len(images), self.max_masks, self.res, self.res)
        n = torch.zeros(len(images), dtype=torch.long)
        for b, im in enumerate(images):
            arr = self._input(im)
            found = self.amg.generate(arr)
            embeds.append(self._embed.value[0].float().cpu())
            found.sort(key=lambda m: m["predicted_iou"] * m["stability_score"], reverse=True)
            for i, m in enumerate(found[: self.max_masks]):
                masks[b, i] = torch.from_numpy(m["segmentation"]).float()
            n[b] = min(len(found), self.max_masks)
        return {"embed": torch.stack(embeds), "masks": masks, "n_masks": n}

    def decode(self, z, t):
        dec, pe = self.sam.mask_decoder, self.sam.prompt_encoder
        dense_w = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        out = []
        for b in range(z.shape[0]):
            emb = t["embed"][b: b + 1].to(z.device, z.dtype)
            dense = dense_w.to(z.dtype).expand(z.shape[1], -1, *emb.shape[-2:])
            logits, _ = dec(image_embeddings=emb, image_pe=pe.get_dense_pe().to(z.dtype),
                            sparse_prompt_embeddings=z[b][:, None, :],
                            dense_prompt_embeddings=dense, multimask_output=False)
            # upstream (decode_sam_embed_with_tokens) runs SAM's own postprocess_masks, as
            # the automatic mask generator's targets do: 256 -> 1024 (the padded input
            # frame, all of it for a square picture) -> the 256 picture, bilinear both ways
            out.append(self.sam.postprocess_masks(logits, input_size=self._frame,
                                                  original_size=(self.res, self.res))[:, 0])
        return torch.stack(out)

    @functools.cached_property
    def _frame(self) -> tuple[int, int]:
        """The picture's size inside SAM's square input (ResizeLongestSide of res x res)."""
        from segment_anything.utils.transforms import ResizeLongestSide

        size = self.sam.image_encoder.img_size
        return ResizeLongestSide(size).get_preprocess_shape(self.res, self.res, size)

    def loss(self, pred, t):
        return losses.sam_loss(pred, t["masks"].to(pred.device), t["n_masks"],
                               empty=self.empty_masks)


# ----------------------------------------------------------------------------- Depth Anything v2
DEPTH_INPUTS = ("upstream", "direct")


def depth_pixels_upstream(images, size: int = 518, first: int = 256) -> torch.Tensor:
    """Upstream CoVT's way into Depth Anything v2: the image resized to ``first`` x ``first``
    (PIL bicubic), then Depth Anything's own ``image2tensor`` chain: values / 255, OpenCV
    cubic resize to ``size`` (a square stays square, a multiple of 14), ImageNet
    normalisation. RGB in (upstream handed it BGR by mistake: fixed, README)."""
    import cv2

    out = []
    for im in images:
        arr = np.asarray(im.convert("RGB").resize((first, first), Image.BICUBIC),
                         dtype=np.float64) / 255.0
        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_CUBIC)
        arr = (arr - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
        out.append(torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1))
    return torch.stack(out)


class DepthExpert(Expert):
    """Depth Anything v2 (transformers) at 518x518 (37x37 patches). Targets: the backbone's
    feature maps at its ``out_indices`` (upstream's layers 4/11/17/23 for ViT-L), one per
    token, and the model's relative depth resized to 256x256. Decoding:
    :func:`depth_from_tokens`.

    ``input_mode="upstream"``: the image first squashed to 256 px, then Depth Anything's own
    cubic resize to 518 (:func:`depth_pixels_upstream`), the depth resized to 256 with
    ``align_corners=True``, as upstream; ``"direct"`` (ours): the original squashed straight
    to 518 (more detail), ``align_corners=False``."""

    name, res, size = "depth", 256, 518
    version = "1"
    keys = ("feats", "depth")

    def __init__(self, n_tokens: int = 4, ckpt: Path | None = None,
                 input_mode: str = "upstream"):
        super().__init__(n_tokens)
        from transformers import DepthAnythingForDepthEstimation

        if input_mode not in DEPTH_INPUTS:
            raise ValueError(f"unknown depth input {input_mode!r}: one of {DEPTH_INPUTS}")
        self.input_mode = input_mode
        self.version = f"{self.version}:{input_mode}"  # caches of the other input are refused
        ckpt = checkpoint("depth", ckpt)
        self.model = DepthAnythingForDepthEstimation.from_pretrained(str(ckpt)).to(device())
        self.model.eval().requires_grad_(False)
        layers = len(self.model.config.backbone_config.out_indices)
        if n_tokens != layers:
            raise ValueError(f"depth tokens must be one per Depth Anything feature layer "
                             f"({layers}), got {n_tokens}")
        self.token_dim = self.model.config.backbone_config.hidden_size
        self.patch = self.model.config.backbone_config.patch_size
        self._feats = _Captured(self.model.backbone)

    def _pixels(self, images) -> torch.Tensor:
        if self.input_mode == "upstream":
            return depth_pixels_upstream(images, self.size)
        return _rgb(images, self.size)

    @torch.no_grad()
    def targets(self, images):
        x = self._pixels(images).to(device())
        depth = self.model(pixel_values=x).predicted_depth  # [B, 518, 518], ReLU'd by the head
        g = self.size // self.patch
        feats = []
        for f in self._feats.value.feature_maps:  # [B, (1+)g*g, C] or [B, C, g, g]
            if f.dim() == 3:
                f = f[:, -g * g:].transpose(1, 2).reshape(f.shape[0], -1, g, g)
            feats.append(f)
        depth = F.interpolate(depth[:, None].float(), size=(self.res, self.res), mode="bilinear",
                              align_corners=self.input_mode == "upstream")[:, 0]
        return {"feats": torch.stack(feats, 1).float().cpu(), "depth": depth.relu().cpu()}

    def decode(self, z, t):
        return depth_from_tokens(z, t["feats"].to(z.device, z.dtype), self.res)

    def loss(self, pred, t):
        return losses.l1_loss(pred, t["depth"].to(pred.device, pred.dtype), "depth")


# ----------------------------------------------------------------------------- feature experts
class _HFFeatures(Expert):
    """A transformers vision model whose features are the target (MSE, no decoder).

    Images go through the checkpoint's image processor on its PIL backend: upstream pins
    transformers 4.50.1, whose processors for these models are the PIL ones; 5.x defaults to
    torchvision, which resizes with other filters and centres a padded crop one pixel apart
    (``round`` against ``//``)."""

    version = "2"  # 2: the PIL processors (upstream's); 1 used transformers 5's torchvision
    keys = ("features",)

    def __init__(self, name: str, n_tokens: int, ckpt: Path | None, processor_kwargs=None):
        super().__init__(n_tokens)
        from transformers import AutoImageProcessor

        self.name = name
        self.ckpt = checkpoint(name, ckpt)
        self.processor = AutoImageProcessor.from_pretrained(
            str(self.ckpt), backend="pil", **(processor_kwargs or {}))
        self.model = self._load().to(device()).eval().requires_grad_(False)

    def _load(self):
        from transformers import AutoModel

        return AutoModel.from_pretrained(str(self.ckpt))

    def _pixels(self, images):
        x = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        return x["pixel_values"].to(device())

    def decode(self, z, t):
        return z

    def loss(self, pred, t):
        return losses.mse_loss(pred, t["features"].to(pred.device, pred.dtype), self.name)


DINO_INPUTS = ("upstream", "full448")


class DinoExpert(_HFFeatures):
    """DINOv2 with a 448x448 input: the final-norm token sequence, CLS + patches.

    ``input_mode="upstream"``: upstream's processor call (``crop_size=448`` with the
    checkpoint's own ``shortest_edge`` of 256), so the 448 centre crop zero-pads a 256-px
    image: its targets encode a small picture inside a black frame. ``"full448"`` (ours):
    the shorter side resized to 448 and a real 448 crop."""

    size = 448

    def __init__(self, n_tokens: int = 4, ckpt: Path | None = None,
                 input_mode: str = "upstream"):
        if input_mode not in DINO_INPUTS:
            raise ValueError(f"unknown DINO input {input_mode!r}: one of {DINO_INPUTS}")
        self.input_mode = input_mode
        kwargs = {"crop_size": {"height": self.size, "width": self.size}}
        if input_mode == "full448":
            kwargs["size"] = {"shortest_edge": self.size}
        super().__init__("dino", n_tokens, ckpt, kwargs)
        self.version = f"{self.version}:{input_mode}"  # caches of the other input are refused
        cfg = self.model.config
        self.token_dim = cfg.hidden_size
        self._queries = 1 + (self.size // cfg.patch_size) ** 2

    def n_queries(self):
        return self._queries

    @torch.no_grad()
    def targets(self, images):
        out = self.model(pixel_values=self._pixels(images))
        return {"features": out.last_hidden_state.float().cpu()}


class PooledExpert(_HFFeatures):
    """SigLIP / MetaCLIP: the pooled image embedding (``get_image_features``) [1, D]."""

    def __init__(self, name: str, n_tokens: int = 4, ckpt: Path | None = None):
        super().__init__(name, n_tokens, ckpt)
        cfg = self.model.config
        self.token_dim = (getattr(cfg, "projection_dim", None) if name == "metaclip" else None
                          ) or cfg.vision_config.hidden_size

    def n_queries(self):
        return 1

    @torch.no_grad()
    def targets(self, images):
        out = self.model.get_image_features(pixel_values=self._pixels(images))
        pooled = out if isinstance(out, torch.Tensor) else out.pooler_output
        return {"features": pooled[:, None, :].float().cpu()}


# ----------------------------------------------------------------------------- PIDINet
def _pidinet_module():
    """controlnet-aux's PiDiNet network code, loaded by file so that the package's
    ``__init__`` (every other detector and its dependencies) is not imported."""
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the PIDINet expert needs the network code of controlnet-aux: "
                          "pip install --no-deps controlnet-aux==0.0.10 opencv-python-headless")
    path = Path(next(iter(spec.submodule_search_locations))) / "pidi" / "model.py"
    mod_spec = importlib.util.spec_from_file_location("svp_pidinet_model", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


class PidinetExpert(Expert):
    """PiDiNet carv4 (+ spatial attention, dilation) with its matching checkpoint. Input:
    256x256 RGB, ImageNet-normalised. Targets: the first side output ``sigmoid(e1)`` (the
    edge map upstream supervises) and block-1's 60-channel mid features; decoding:
    :func:`edges_from_kernels` with the raw tokens as kernels."""

    name, token_dim, res = "pidinet", 60, 256
    version = "1"
    keys = ("feats", "edges")

    def __init__(self, n_tokens: int = 4, ckpt: Path | None = None):
        super().__init__(n_tokens)
        ckpt = checkpoint("pidinet", ckpt)
        net = _pidinet_module().pidinet()
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
        self.net = net.to(device()).eval().requires_grad_(False)
        self._mid = _Captured(self.net.block1_3)

    @torch.no_grad()
    def targets(self, images):
        side = self.net(_rgb(images, self.res).to(device()))[0]  # sigmoid(e1) [B, 1, H, W]
        return {"feats": self._mid.value.float().cpu(), "edges": side[:, 0].float().cpu()}

    def decode(self, z, t):
        return edges_from_kernels(z, t["feats"].to(z.device, z.dtype))

    def loss(self, pred, t):
        return losses.l1_loss(pred, t["edges"].to(pred.device, pred.dtype), "pidinet")


# ----------------------------------------------------------------------------- sets
def real_expert(name: str, n_tokens: int, ckpt: str | Path | None,
                dino_input: str = "upstream", depth_input: str = "upstream") -> Expert:
    if name == "sam":
        return SamExpert(n_tokens, ckpt)
    if name == "depth":
        return DepthExpert(n_tokens, ckpt, depth_input)
    if name == "dino":
        return DinoExpert(n_tokens, ckpt, dino_input)
    if name == "pidinet":
        return PidinetExpert(n_tokens, ckpt)
    return PooledExpert(name, n_tokens, ckpt)


def real_experts(cfg, checkpoints: Mapping[str, str | Path | None],
                 dino_input: str = "upstream", depth_input: str = "upstream"
                 ) -> dict[str, Expert]:
    """The experts of a :class:`ThoughtConfig` from their checkpoints (name -> path)."""
    return {name: real_expert(name, cfg.count(name), checkpoints.get(name), dino_input,
                              depth_input)
            for name in cfg.experts}


def real_head_shapes(cfg, checkpoints: Mapping[str, str | Path | None]) -> dict[str, HeadShape]:
    """Head shapes of the real experts, read from the checkpoints' configs when they are
    set (cheap: config.json only), else upstream's checkpoints' shapes."""
    out = {}
    for name in cfg.experts:
        dim, queries = DEFAULT_DIMS[name]
        path = Path(checkpoints[name]) if checkpoints.get(name) else None
        if path is not None and path.is_dir() and (path / "config.json").exists():
            c = _hf_config(path)
            if name == "depth":
                dim = c["backbone_config"]["hidden_size"]
            elif name == "dino":
                dim = c["hidden_size"]
                queries = 1 + (DinoExpert.size // c["patch_size"]) ** 2
            elif name == "metaclip":
                dim = c.get("projection_dim") or c["vision_config"]["hidden_size"]
            elif name == "siglip":
                dim = c["vision_config"]["hidden_size"]
        n = cfg.count(name)
        out[name] = HeadShape(dim, n, queries or n)
    return out
