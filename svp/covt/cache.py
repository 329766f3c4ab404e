"""On-disk cache of expert targets: one safetensors file per image, keyed by its pixels.

The key is a SHA-1 of the decoded RGB pixels and size, so the same picture hits the cache
whatever its path, format or dataset row, and a changed file misses. ``meta.json`` records
each expert's fingerprint; a cache made with other experts / settings is refused instead of
silently feeding stale targets. Tensors are stored in float16 (bool-like masks as uint8),
read back as float32. Files are written atomically (temp + rename), so an interrupted run
leaves only whole entries and a rerun skips them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from PIL import Image

from svp.common.io import write_atomic

META = "meta.json"


def image_key(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    h = hashlib.sha1(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


class TargetCache:
    """Read/write expert targets under ``root`` for experts with the given fingerprints."""

    def __init__(self, root: str | os.PathLike, fingerprints: dict[str, str]):
        self.root = Path(root)
        self.fingerprints = dict(fingerprints)

    # -- meta
    def check_meta(self, create: bool) -> None:
        """Refuse a cache whose experts differ; with ``create``, start a new one."""
        meta = self.root / META
        if meta.exists():
            have = json.loads(meta.read_text())["experts"]
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
                write_atomic(meta, json.dumps({"experts": have}, indent=1).encode())
            return
        if not create:
            raise FileNotFoundError(f"no expert target cache at {self.root} ({META} missing); "
                                    f"build it with data_tools/cache_expert_targets.py")
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(meta, json.dumps({"experts": self.fingerprints}, indent=1).encode())

    def cached_experts(self) -> list[str]:
        """Experts this cache holds targets for (per ``meta.json``)."""
        meta = self.root / META
        if not meta.exists():
            return []
        have = json.loads(meta.read_text())["experts"]
        return [k for k, v in self.fingerprints.items() if have.get(k) == v]

    # -- entries
    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, key: str, experts) -> bool:
        p = self.path(key)
        if not p.exists():
            return False
        from safetensors import safe_open

        with safe_open(p, "pt") as f:
            names = {k.split(".", 1)[0] for k in f.keys()}
        return all(e in names for e in experts)

    def load(self, key: str, experts) -> dict[str, dict[str, torch.Tensor]] | None:
        """{expert: {name: tensor}} for ``experts``, or None when any is missing."""
        p = self.path(key)
        if not p.exists():
            return None
        from safetensors.torch import load_file

        flat = load_file(str(p))
        out: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in flat.items():
            expert, name = k.split(".", 1)
            if expert in experts:
                out.setdefault(expert, {})[name] = v.float() if v.is_floating_point() else v
        return out if all(e in out for e in experts) else None

    def save(self, key: str, targets: dict[str, dict[str, torch.Tensor]]) -> None:
        """Merge ``targets`` into the entry for ``key`` (atomic)."""
        from safetensors.torch import load_file, save

        p = self.path(key)
        flat = load_file(str(p)) if p.exists() else {}
        for expert, tensors in targets.items():
            for name, t in tensors.items():
                t = t.detach().cpu()
                if t.is_floating_point():
                    t = t.to(torch.float16)
                elif t.dtype == torch.bool:
                    t = t.to(torch.uint8)
                flat[f"{expert}.{name}"] = t.contiguous()
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, save(flat))


def split_batch(targets: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """A batched target dict -> ``n`` per-sample dicts (batch dim dropped)."""
    return [{k: v[i] for k, v in targets.items()} for i in range(n)]

