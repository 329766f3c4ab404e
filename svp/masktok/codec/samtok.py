"""The official SAMTok mask tokenizer (``mask_tokenizer_256x2.pth``) behind :class:`MaskCodec`.

SAMTok's tokenizer is SAM2.1 Hiera-L plus two additions: a query-token *mask encoder*
(``sam_mask_encoder``: a 2-block two-way transformer over the image features, prompted by the
box as two corner points and by the mask as SAM's dense mask prompt) and a two-level residual
quantizer with two separate 256-entry codebooks. Decoding feeds the summed code embeddings
to the stock SAM2 mask decoder as one extra sparse prompt token.

We build the SAM2 part from the ``sam2`` package (its own Hiera-L config), add the two pieces
with the module names the release uses, and load the released state dict *strictly* (every
key we need must be there, nothing unknown may be left over), so a wrong or truncated file
fails at load time with the keys named, not later with bad masks.

Numerics follow the release (SAMTok's ``VQ_SAM2`` code and ``mask_tokenizer_256x2.pth``):
  * image squashed to 1024x1024 (bicubic, aspect not kept), /255, ImageNet mean/std;
  * ``no_mem_embed`` added to the top-level features on both sides;
  * box mandatory (derived from the mask when not given, x2/y2 the last pixel's index as
    ``torchvision.ops.masks_to_boxes`` gives it to SAMTok's data scripts), mask prompt
    256x256 bilinear with antialias; the prompt encoder runs in fp32 outside autocast;
  * a missing second code decodes as code 0 (``(c0, -1)`` -> ``e0[c0] + e1[0]``), the effect
    of upstream's in-place ``embed_code``;
  * decoding uses multimask output and keeps the candidate with the highest predicted IoU,
    without object-score suppression; logits are upsampled bilinearly to the image size and
    thresholded at 0.5 **on the logits**, as the official evaluation does;
  * on CUDA the networks (not the prompt encoder) run under bf16 autocast, as upstream; on
    CPU in float32.

Needs the ``sam2`` package (``SAM2_BUILD_CUDA=0 pip install --no-build-isolation
sam2==1.1.0``) and the weights file, which every released SAMTok VLM repository ships next to
``sam2.1_hiera_large.pt`` (e.g. ``zhouyik/Qwen3-VL-4B-SAMTok``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from svp.masktok.codec.base import (
    ImageLike,
    MaskCodec,
    masks_to_boxes,
    squash_normalise,
    to_rgb_array,
)

WEIGHTS_NAME = "mask_tokenizer_256x2.pth"
ARCH_NAME = "samtok_arch.json"  # optional: hydra overrides for a non-release architecture
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"
IMAGE_SIZE = 1024
LOGIT_THRESHOLD = 0.5
SAM2_INSTALL = "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0"
# SAM2 checkpoint parts the codec never runs (video memory); tolerated either way at load.
_UNUSED_PREFIXES = ("memory_attention.", "memory_encoder.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
                    "mask_downsample.", "maskmem_tpos_enc", "no_obj_ptr", "no_mem_pos_enc",
                    "no_obj_embed_spatial")


class SamTokUnavailable(RuntimeError):
    """The official back-end cannot run here: a package or a file is missing."""


class UnsafeArchitecture(ValueError):
    """A ``samtok_arch.json`` that asks for more than plain values: a codec folder is data
    (often downloaded), and hydra overrides can name callables (``_target_``) that
    ``instantiate`` would run, e.g. ``shutil.copyfile`` over a user's file."""


def _plain(value) -> bool:
    """A number, a bool, a string without interpolation, or a (nested) list of those."""
    if isinstance(value, bool | int | float):
        return True
    if isinstance(value, str):
        return "${" not in value
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return False


def read_arch_overrides(path: Path) -> list[str]:
    """The hydra overrides of ``samtok_arch.json`` (``{"hydra_overrides": ["key=value", ...]}``),
    admitted only as data: each changes an existing key (no ``+``/``++``/``~``), no part of
    the key starts with ``_`` (``_target_``, ``_partial_``, ``_args_`` ...) or is ``hydra``,
    and the value is a number, bool, string without ``${...}`` or a list of those (no dicts).
    Anything else raises :class:`UnsafeArchitecture` naming the file and the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UnsafeArchitecture(f"{path}: not a JSON file ({exc})") from exc
    overrides = doc.get("hydra_overrides") if isinstance(doc, dict) else None
    if (not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides)
            or set(doc) != {"hydra_overrides"}):
        raise UnsafeArchitecture(f'{path}: expected {{"hydra_overrides": ["key=value", ...]}} '
                                 "and nothing else")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise UnsafeArchitecture(f"{path}: an override does not parse ({exc})") from exc
    for o in parsed:
        parts = o.key_or_group.split(".")
        why = None
        if o.type != OverrideType.CHANGE:
            why = "only changes of existing keys are allowed (no +, ++ or ~)"
        elif any(p.startswith("_") or p == "hydra" for p in parts) or o.package:
            why = ("keys starting with '_' (callables and their arguments) or under 'hydra' "
                   "are not settings")
        elif not _plain(o.value()):
            why = "values must be numbers, bools, plain strings or lists of them"
        if why:
            raise UnsafeArchitecture(f"{path}: refused override {o.input_line!r}: {why}")
    return list(overrides)


def _targets(node, path: str = "") -> dict[str, str]:
    """Every ``_target_`` of a resolved config (path -> callable name)."""
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                out[path or "."] = v
            else:
                out.update(_targets(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.update(_targets(v, f"{path}[{i}]"))
    return out


def require_sam2():
    """Import the ``sam2`` package or explain how to get it."""
    try:
        import sam2  # noqa: F401
        from hydra import compose
        from hydra.utils import instantiate
    except ImportError as exc:
        raise SamTokUnavailable(
            f"the 'samtok' mask codec needs the 'sam2' package (SAM2.1 Hiera-L), which is not "
            f"importable here ({exc}). Install it with: {SAM2_INSTALL}") from exc
    return compose, instantiate


def find_weights(path: str | Path) -> Path:
    """``DIR`` holding ``mask_tokenizer_256x2.pth``, or the file itself."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        w = p / WEIGHTS_NAME
        if w.is_file():
            return w
        raise SamTokUnavailable(
            f"samtok codec: {p} has no {WEIGHTS_NAME}. It ships with every released SAMTok "
            f"model (e.g. huggingface.co/zhouyik/Qwen3-VL-4B-SAMTok); download it into {p} "
            "or pass the file path, or use a builtin codec (data_tools/train_mask_codec.py)")
    raise SamTokUnavailable(f"samtok codec: {p} does not exist (expected a directory with "
                            f"{WEIGHTS_NAME}, or the file itself)")


class QueryMaskEncoder(nn.Module):
    """Learned query token(s) read the image + box/mask prompts through a two-way transformer.

    The release's ``sam_mask_encoder``: SAM's decoder transformer without any mask or IoU head;
    the output is the transformed query token, the continuous mask embedding z.
    """

    def __init__(self, transformer: nn.Module, dim: int = 256, num_tokens: int = 1):
        super().__init__()
        self.transformer = transformer
        self.mask_tokens = nn.Embedding(num_tokens, dim)
        self.num_tokens = num_tokens

    def forward(self, image_embeddings, image_pe, sparse, dense):
        queries = self.mask_tokens.weight[None].expand(sparse.size(0), -1, -1)
        tokens = torch.cat([queries, sparse], dim=1)
        src = image_embeddings + dense
        pos = image_pe.expand(tokens.size(0), -1, -1, -1)
        hs, _ = self.transformer(src, pos, tokens)
        return hs[:, :self.num_tokens]


class Codebook(nn.Embedding):
    """One EMA codebook as released: ``size`` codes + a zero padding row; inference only."""

    def __init__(self, size: int = 256, dim: int = 256):
        super().__init__(size + 1, dim, padding_idx=size)
        self.weight.requires_grad_(False)
        self.size = size
        self.register_buffer("cluster_size_ema", torch.zeros(size))
        self.register_buffer("embed_ema", torch.zeros(size, dim))

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        book = self.weight[:-1].to(x.dtype)
        d = x.pow(2).sum(1, keepdim=True) - 2 * x @ book.t() + book.pow(2).sum(1)[None]
        return d.argmin(dim=1)


class ResidualQuantizer(nn.Module):
    """Two-step residual VQ: code 1 quantizes z, code 2 quantizes what code 1 left over."""

    def __init__(self, size: int = 256, dim: int = 256, depth: int = 2):
        super().__init__()
        self.codebooks = nn.ModuleList(Codebook(size, dim) for _ in range(depth))

    @torch.no_grad()
    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        residual = z.float().clone()
        codes = []
        for book in self.codebooks:
            idx = book.nearest(residual)
            residual -= book.weight[idx].float()
            codes.append(idx)
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the codes' embeddings, a missing (-1) code read as code 0: what upstream's
        ``ResidualQuantizer.embed_code`` computes (its ``fake_code[code == -1] = 0`` rewrites
        the caller's tensor in place, so its later validity mask keeps every entry and
        ``(c0, -1)`` decodes as ``e0[c0] + e1[0]``)."""
        out = torch.zeros(codes.size(0), self.codebooks[0].embedding_dim,
                          device=codes.device, dtype=self.codebooks[0].weight.dtype)
        for d, book in enumerate(self.codebooks):
            out += book.weight[codes[:, d].clamp_min(0)]
        return out


class SamTokTokenizer(nn.Module):
    """Module tree whose state dict has the release's key names.

    ``model.sam2_model.*`` is SAM2Base (with ``sam_mask_encoder`` added to it) and
    ``quantizer.codebooks.{0,1}.*`` the two codebooks.
    """

    def __init__(self, overrides: Sequence[str] = ()):
        super().__init__()
        compose, instantiate = require_sam2()
        from omegaconf import OmegaConf
        from sam2.modeling.sam.transformer import TwoWayTransformer

        cfg = compose(config_name=SAM2_CONFIG, overrides=list(overrides))
        # instantiate a resolved copy whose callables are exactly sam2's own: no override,
        # interpolation or resolver can have added or replaced one
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if overrides:
            stock = _targets(OmegaConf.to_container(compose(config_name=SAM2_CONFIG),
                                                    resolve=True))
            if _targets(resolved) != stock:
                raise UnsafeArchitecture("the architecture overrides change which callables "
                                         "the SAM2 config instantiates; refused")
        sam2_model = instantiate(OmegaConf.create(resolved)["model"], _recursive_=True)
        dim = sam2_model.hidden_dim
        sam2_model.sam_mask_encoder = QueryMaskEncoder(
            TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=2048, num_heads=8), dim=dim)
        self.model = nn.Module()
        self.model.sam2_model = sam2_model
        self.quantizer = ResidualQuantizer(256, dim, 2)

    @property
    def sam(self):
        return self.model.sam2_model

    def features(self, pixels: torch.Tensor):
        """Top-level features (+ no_mem_embed) [B,C,64,64] and the two high-res maps."""
        sam = self.sam
        out = sam.forward_image(pixels)
        _, feats, _, sizes = sam._prepare_backbone_features(out)
        b = pixels.size(0)
        top = (feats[-1] + sam.no_mem_embed).permute(1, 2, 0).reshape(b, -1, *sizes[-1])
        high = [f.permute(1, 2, 0).reshape(b, -1, *s)
                for f, s in zip(feats[:-1], sizes[:-1], strict=True)]
        return top, high

    def encode_latent(self, top, masks: torch.Tensor, boxes_norm: torch.Tensor):
        """z [N, C] from per-mask features ``top`` [N,...], masks [N,1,H,W], boxes [N,4] in 0..1."""
        pe = self.sam.sam_prompt_encoder
        corners = boxes_norm.float().reshape(-1, 2, 2) * IMAGE_SIZE
        labels = torch.tensor([[2, 3]], dtype=torch.int, device=top.device).expand(len(corners), 2)
        # the prompt encoder (box-corner Fourier features, mask down-scaling convs) in fp32
        # outside any autocast, as upstream's encode_mask_box_input: under bf16 its corner
        # features move by ~0.006 on average, enough to flip codes near a decision boundary
        with torch.autocast(device_type=top.device.type, enabled=False):
            prompt = F.interpolate(masks.float(), size=pe.mask_input_size, mode="bilinear",
                                   align_corners=False, antialias=True)
            sparse, dense = pe(points=(corners, labels), boxes=None, masks=prompt)
            dense_pe = pe.get_dense_pe()
        z = self.sam.sam_mask_encoder(top, dense_pe, sparse, dense)
        return z[:, 0]

    def decode_logits(self, top, high, embeds: torch.Tensor) -> torch.Tensor:
        """Low-res logits [N, 256, 256]: the best-IoU of SAM2's three candidates."""
        sam = self.sam
        n = embeds.size(0)
        coords = torch.zeros(n, 1, 2, device=top.device)
        labels = -torch.ones(n, 1, dtype=torch.int32, device=top.device)
        sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        sparse = torch.cat([sparse, embeds[:, None].to(sparse.dtype)], dim=1)
        masks, ious, _, _ = sam.sam_mask_decoder(
            image_embeddings=top, image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=True, repeat_image=False, high_res_features=high)
        best = ious.argmax(dim=-1)
        return masks.float()[torch.arange(n, device=masks.device), best]


def _unwrap_state(obj) -> dict:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict, got {type(obj).__name__}")
    return obj


def check_state(model: nn.Module, state: dict, source: str) -> None:
    """Strict key and shape check that names what is wrong (unused SAM2 video parts aside)."""
    own = model.state_dict()

    def used(k: str) -> bool:
        rest = k.removeprefix("model.sam2_model.")
        return not rest.startswith(_UNUSED_PREFIXES)

    missing = [k for k in own if used(k) and k not in state]
    unexpected = [k for k in state if k not in own and used(k)]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[:5]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:5]})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (first: {shapes[:3]})")
    if problems:
        raise ValueError(f"{source} is not a SAMTok 256x2 mask tokenizer state dict for this "
                         f"architecture: " + "; ".join(problems))


def preprocess(image: ImageLike) -> tuple[np.ndarray, torch.Tensor]:
    """RGB array and the normalised 1024x1024 tensor (DirectResize: squash, PIL bicubic)."""
    arr = to_rgb_array(image)
    return arr, squash_normalise(arr, IMAGE_SIZE, Image.BICUBIC)


class SamTokCodec(MaskCodec):
    """``samtok:DIR``: the released SAMTok tokenizer; codes are interchangeable with upstream's."""

    name = "samtok"
    threshold = LOGIT_THRESHOLD

    def __init__(self, model: SamTokTokenizer, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> SamTokCodec:
        require_sam2()
        weights = find_weights(path)
        arch = weights.parent / ARCH_NAME
        overrides = read_arch_overrides(arch) if arch.is_file() else []
        model = SamTokTokenizer(overrides)
        try:
            state = _unwrap_state(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"{weights}: cannot read as a torch state dict ({exc})") from exc
        check_state(model, state, str(weights))
        model.load_state_dict(state, strict=False)
        return cls(model, device=device)

    def _autocast(self):
        if str(self.device).startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def encode(self, image, masks, boxes=None):
        arr, pixels = preprocess(image)
        h, w = arr.shape[:2]
        m = np.asarray(masks).astype(bool)
        if m.ndim != 3 or m.shape[1:] != (h, w):
            raise ValueError(f"masks {m.shape} do not match image {(h, w)} (expected [N, H, W])")
        if len(m) == 0:
            return np.zeros((0, 2), np.int64)
        b = (masks_to_boxes(m, inclusive=True) if boxes is None
             else np.asarray(boxes, dtype=np.float32))
        if np.isnan(b).any():
            raise ValueError("an empty mask has no box; drop it before encoding")
        boxes_norm = torch.from_numpy(b.reshape(-1, 4) / np.array([w, h, w, h], np.float32))
        with self._autocast():
            top, _ = self.model.features(pixels[None].to(self.device))
            n = len(m)
            z = self.model.encode_latent(top.expand(n, -1, -1, -1),
                                         torch.from_numpy(m[:, None]).to(self.device),
                                         boxes_norm.to(self.device))
        return self.model.quantizer.quantize(z).cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def decode_logits(self, image: ImageLike, codes) -> torch.Tensor:
        """Low-resolution logits [N, 256, 256]."""
        c = torch.as_tensor(np.asarray(codes, dtype=np.int64).reshape(-1, 2), device=self.device)
        if len(c) == 0:
            return torch.zeros(0, 256, 256)
        if (c[:, 0] < 0).any() or (c >= 256).any():
            raise ValueError("codes must be 0..255 (the second may be -1)")
        _, pixels = preprocess(image)
        with self._autocast():
            top, high = self.model.features(pixels[None].to(self.device))
            n = len(c)
            embeds = self.model.quantizer.embed(c)
            return self.model.decode_logits(top.expand(n, -1, -1, -1),
                                            [x.expand(n, -1, -1, -1) for x in high],
                                            embeds).float()
