"""On-disk cache of expert targets: one safetensors file per image, keyed by its pixels.

The key is a SHA-1 of the decoded RGB pixels and size, so the same picture hits the cache
whatever its path, format or dataset row, and a changed file misses. ``meta.json`` records
the format, what the entries hold and each expert's fingerprint; a cache made with other
experts, in another format (the first one stored everything in fp16, about 16 MB per image
at sam,depth,dino) or with other contents is refused with a message instead of silently
feeding stale targets.

Two contents:

- ``compact`` (default): only each expert's *searched* keys (SAM's automatic masks, bit-packed:
  8 x 256 x 256 masks = 64 KiB). Everything one frozen forward pass gives (SAM's embedding,
  Depth Anything's features and depth, DINO's features, ...) is recomputed in the training
  step, exactly as without a cache, so the losses are the on-the-fly losses. The search is
  what costs seconds per image; the forward passes are a small share of a VLM step on a GPU.
- ``full``: every key in float16 (masks bit-packed), no expert runs in the training step;
  about 16 MB per image at the default experts with the real checkpoints.

Files are written atomically (temp + rename), so an interrupted run leaves only whole entries
and a rerun skips them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from svp.common.io import write_atomic

META = "meta.json"
FORMAT = 2
CONTENTS = ("compact", "full")
_BITS = "bits:"  # safetensors metadata: this uint8 tensor is np.packbits of a 0/1 tensor


def image_key(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    h = hashlib.sha1(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def stored_keys(expert, contents: str) -> tuple[str, ...]:
    """What an entry keeps of ``expert``'s targets under ``contents``."""
    if contents not in CONTENTS:
        raise ValueError(f"unknown cache contents {contents!r}: one of {', '.join(CONTENTS)}")
    return tuple(expert.searched) if contents == "compact" else tuple(expert.keys)


def pack_bits(t: torch.Tensor) -> tuple[torch.Tensor, str]:
    """A 0/1 tensor -> (uint8 bytes, ``"bits:<shape>"``); raises on any other value."""
    arr = t.detach().cpu().numpy()
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("only 0/1 tensors can be stored as bits")
    packed = np.packbits(arr.astype(bool).reshape(-1))
    return torch.from_numpy(packed), _BITS + "x".join(map(str, arr.shape))


def unpack_bits(packed: torch.Tensor, spec: str) -> torch.Tensor:
    """Inverse of :func:`pack_bits`, as float32."""
    shape = tuple(int(d) for d in spec[len(_BITS):].split("x") if d)
    n = int(np.prod(shape)) if shape else 1
    bits = np.unpackbits(packed.numpy(), count=n)
    return torch.from_numpy(bits.astype(np.float32).reshape(shape))


class TargetCache:
    """Read/write expert targets under ``root`` for experts with the given fingerprints."""

    def __init__(self, root: str | os.PathLike, fingerprints: dict[str, str],
                 contents: str | None = None):
        self.root = Path(root)
        self.fingerprints = dict(fingerprints)
        self.contents = contents

    # -- meta
    def check_meta(self, create: bool) -> None:
        """Refuse a cache of another format, contents or experts; with ``create``, start a
        new one (or add experts to this one)."""
        meta = self.root / META
        if meta.exists():
            data = json.loads(meta.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(
                    f"expert target cache {self.root} is in an older format (format "
                    f"{data.get('format', 1)}, every target in fp16, ~16 MB per image); this "
                    f"version reads format {FORMAT}: rebuild it with "
                    "data_tools/cache_expert_targets.py into a new --cache dir")
            if self.contents is not None and data["contents"] != self.contents:
                raise ValueError(f"expert target cache {self.root} holds {data['contents']!r} "
                                 f"entries, not {self.contents!r} (use another --cache dir)")
            self.contents = data["contents"]
            have = data["experts"]
            wrong = {k: (have.get(k), v) for k, v in self.fingerprints.items()
                     if k in have and have[k] != v}
            if wrong:
                raise ValueError(f"expert target cache {self.root} was made with other experts: "
                                 + "; ".join(f"{k}: cache {a} vs now {b}"
                                             for k, (a, b) in wrong.items())
                                 + " (use another --cache dir or delete it)")
            missing = [k for k in self.fingerprints if k not in have]
            if missing and create:
                have.update({k: self.fingerprints[k] for k in missing})
                self._write_meta(have)
            return
        if not create:
            raise FileNotFoundError(f"no expert target cache at {self.root} ({META} missing); "
                                    f"build it with data_tools/cache_expert_targets.py")
        self.contents = self.contents or "compact"
        if self.contents not in CONTENTS:
            raise ValueError(f"unknown cache contents {self.contents!r}: one of "
                             f"{', '.join(CONTENTS)}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_meta(self.fingerprints)

    def _write_meta(self, experts: dict[str, str]) -> None:
        write_atomic(self.root / META, json.dumps(
            {"format": FORMAT, "contents": self.contents, "experts": experts}, indent=1).encode())

    # -- entries
    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, key: str, needed: dict[str, tuple[str, ...]]) -> bool:
        """Whether the entry exists and holds ``needed`` (expert -> keys)."""
        p = self.path(key)
        if not p.exists():
            return False
        from safetensors import safe_open

        with safe_open(p, "pt") as f:
            names = set(f.keys())
        return all(f"{e}.{k}" in names for e, keys in needed.items() for k in keys)

    def load(self, key: str, experts) -> dict[str, dict[str, torch.Tensor]] | None:
        """{expert: {name: tensor}} of what the entry holds for ``experts`` (an expert with
        nothing stored maps to {}), or None when there is no entry."""
        p = self.path(key)
        if not p.exists():
            return None
        from safetensors import safe_open

        out: dict[str, dict[str, torch.Tensor]] = {e: {} for e in experts}
        with safe_open(p, "pt") as f:
            specs = f.metadata() or {}
            for k in f.keys():
                expert, name = k.split(".", 1)
                if expert not in out:
                    continue
                v = f.get_tensor(k)
                if specs.get(k, "").startswith(_BITS):
                    v = unpack_bits(v, specs[k])
                elif v.is_floating_point():
                    v = v.float()
                out[expert][name] = v
        return out

    def save(self, key: str, targets: dict[str, dict[str, torch.Tensor]],
             binary: dict[str, tuple[str, ...]] | None = None) -> None:
        """Merge ``targets`` into the entry for ``key`` (atomic); ``binary[expert]`` names
        0/1 tensors, stored bit-packed; other floats in fp16."""
        from safetensors import safe_open
        from safetensors.torch import save

        p = self.path(key)
        flat: dict[str, torch.Tensor] = {}
        specs: dict[str, str] = {}
        if p.exists():
            with safe_open(p, "pt") as f:
                specs = dict(f.metadata() or {})
                flat = {k: f.get_tensor(k) for k in f.keys()}
        for expert, tensors in targets.items():
            bits = (binary or {}).get(expert, ())
            for name, t in tensors.items():
                k = f"{expert}.{name}"
                t = t.detach().cpu()
                specs.pop(k, None)
                if name in bits:
                    t, specs[k] = pack_bits(t)
                elif t.is_floating_point():
                    t = t.to(torch.float16)
                flat[k] = t.contiguous()
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, save(flat, metadata=specs or None))


def split_batch(targets: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """A batched target dict -> ``n`` per-sample dicts (batch dim dropped)."""
    return [{k: v[i] for k, v in targets.items()} for i in range(n)]
