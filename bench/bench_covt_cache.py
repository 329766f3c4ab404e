"""CoVT target cache at real size: bytes per image and entries read per second, compact vs
full, for the default experts (sam,depth,dino) with the real checkpoints' target shapes.

No weights are needed: entries are written by :class:`svp.covt.cache.TargetCache` from
tensors of the shapes the real experts return (``svp/covt/real.py``):

- SAM ViT-H: image embedding [256, 64, 64]; up to 8 automatic masks [8, 256, 256]; a count
- Depth Anything v2-L: 4 feature maps [4, 1024, 37, 37] (518 px, patch 14); depth [256, 256]
- DINOv2-L at 448 px: CLS + 32x32 patches [1025, 1024]

Masks are random 0/1 (bit-packing does not depend on their content); features random
normal in fp16. The read rate is what a dataloader worker gets from a warm page cache,
to compare with the samples a training step consumes.

    python bench/bench_covt_cache.py [--entries 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REAL_SHAPES = {
    "sam": {"embed": (256, 64, 64), "masks": (8, 256, 256), "n_masks": ()},
    "depth": {"feats": (4, 1024, 37, 37), "depth": (256, 256)},
    "dino": {"features": (1025, 1024)},
}
SEARCHED = {"sam": ("masks", "n_masks"), "depth": (), "dino": ()}
BINARY = {"sam": ("masks",)}


def real_targets(gen: torch.Generator) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for expert, shapes in REAL_SHAPES.items():
        out[expert] = {}
        for k, shape in shapes.items():
            if k == "n_masks":
                out[expert][k] = torch.tensor(8)
            elif k == "masks":
                out[expert][k] = (torch.rand(shape, generator=gen) > 0.7).float()
            else:
                out[expert][k] = torch.randn(shape, generator=gen)
    return out


def measure(root: Path, contents: str, n: int) -> dict:
    from svp.covt.cache import TargetCache

    cache = TargetCache(root / contents, {e: f"real:{e}" for e in REAL_SHAPES}, contents)
    cache.check_meta(create=True)
    gen = torch.Generator().manual_seed(0)
    keys = []
    for i in range(n):
        t = real_targets(gen)
        keep = {e: {k: v for k, v in ts.items()
                    if contents == "full" or k in SEARCHED[e]} for e, ts in t.items()}
        key = f"{i:040x}"
        cache.save(key, keep, BINARY)
        keys.append(key)
    size = statistics.mean(cache.path(k).stat().st_size for k in keys)
    for k in keys:  # warm the page cache: the rate below is decoding, not the disk
        cache.load(k, list(REAL_SHAPES))
    t0 = time.perf_counter()
    for k in keys:
        cache.load(k, list(REAL_SHAPES))
    rate = n / (time.perf_counter() - t0)
    return {"bytes_per_image": size, "reads_per_s": rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=40)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = {c: measure(Path(tmp), c, args.entries) for c in ("compact", "full")}
    print("default experts sam,depth,dino at the real checkpoints' target shapes")
    print("| contents | MB per image | entries read/s (1 process) |\n|---|---|---|")
    for c, f in figures.items():
        print(f"| {c} | {f['bytes_per_image'] / 1e6:.3f} | {f['reads_per_s']:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
