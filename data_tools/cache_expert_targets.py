"""Precompute the CoVT experts' targets for a dataset, so training reads them from disk instead
of running SAM's automatic mask generator (and, with ``--contents full``, every expert) each
step.

    python data_tools/cache_expert_targets.py --dataset train.jsonl --cache covt_cache \\
        --experts sam,depth,dino [--backend real] [--contents compact|full] \\
        [--num_shards 8 --shard_index 3]

``--contents compact`` (default) keeps only what a search produces (SAM's masks, bit-packed,
~64 KiB per image); the forward passes are rerun in the training step with the same results.
``--contents full`` keeps every target in fp16 (~16 MB per image at sam,depth,dino with the
real experts) and no expert runs in training. See svp/covt/cache.py.

Rows are ms-swift rows (``images``) or LLaVA rows (``image``, relative to ``--image_root``);
each row's first image is the one the experts see (upstream uses the first Q/A turn's
image). One file per distinct picture (keyed by its pixels, see svp/covt/cache.py), written
atomically:
a rerun skips what is done, so an interrupted run resumes, and ``--shard_index`` splits the
work between processes or GPUs. Unreadable images are counted and listed, never fatal.
Training uses the cache with ``SVP_COVT_CACHE=<dir>`` and falls back to on-the-fly targets
for any picture the cache lacks.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from svp.common.io import BadLine, iter_jsonl, read_json_document
from svp.covt import settings
from svp.covt.cache import CONTENTS, TargetCache, image_key, split_batch, stored_keys
from svp.covt.experts import build_experts
from svp.covt.tokens import ThoughtConfig


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSON list or JSONL dataset; a line that is not UTF-8 or not JSON stops
    the tool with its line (a cache must cover every row training reads)."""
    if path.suffix == ".json":
        try:
            return read_json_document(path)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    rows = []
    for lineno, row in iter_jsonl(path):
        if isinstance(row, BadLine):
            raise ValueError(f"{path}:{lineno}: {row}")
        rows.append(row)
    return rows


def first_image(row: dict, root: Path | None) -> str | None:
    img = row.get("images") or row.get("image")
    if isinstance(img, list):
        img = img[0] if img else None
    if isinstance(img, dict):
        img = img.get("path")
    if not img:
        return None
    p = Path(img)
    return str(p if p.is_absolute() or root is None else root / p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, type=Path, nargs="+")
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--experts", default=None,
                    help="upstream's VISUAL_MODEL_ID (default: SVP_COVT_EXPERTS, as training)")
    ap.add_argument("--backend", default=None, choices=["real", "standin"],
                    help="default: SVP_COVT_BACKEND, as training")
    ap.add_argument("--contents", choices=CONTENTS, default=None,
                    help="compact (searched keys only) or full (every target); default: "
                         "the existing cache's, else compact")
    ap.add_argument("--image_root", type=Path, default=None)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--num_shards", type=int, default=1)
    ap.add_argument("--shard_index", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0 <= args.shard_index < args.num_shards:
        ap.error(f"--shard_index must be in [0, {args.num_shards})")

    paths: dict[str, None] = {}
    missing_image = 0
    for ds in args.dataset:
        for row in read_rows(ds):
            p = first_image(row, args.image_root)
            if p is None:
                missing_image += 1
            else:
                paths.setdefault(p)
    todo = [p for i, p in enumerate(paths) if i % args.num_shards == args.shard_index]

    config = settings.load()  # expert checkpoints: the SVP_COVT_<EXPERT>_CKPT variables
    cfg = ThoughtConfig.parse(args.experts) if args.experts else config.thought
    experts = build_experts(cfg, args.backend or config.backend, config.checkpoints,
                            config.dino_input, config.depth_input)
    cache = TargetCache(args.cache, {n: e.fingerprint() for n, e in experts.items()},
                        args.contents)
    cache.check_meta(create=True)
    needed = {n: stored_keys(e, cache.contents) for n, e in experts.items()}
    binary = {n: e.binary for n, e in experts.items()}
    idle = [n for n, keys in needed.items() if not keys]
    if idle:
        print(f"note: {', '.join(idle)} search nothing: a compact cache stores nothing for "
              "them and training runs their forward pass (--contents full stores them)")

    counts: Counter = Counter()
    bad: list[str] = []
    written: list[Path] = []
    batch: list[tuple[str, Image.Image]] = []

    def flush():
        if not batch:
            return
        images = [im for _, im in batch]
        per = {n: split_batch(e.targets(images), len(images))
               for n, e in experts.items() if needed[n]}
        for i, (key, _) in enumerate(batch):
            cache.save(key, {n: {k: per[n][i][k] for k in needed[n]} for n in per}, binary)
            written.append(cache.path(key))
        counts["computed"] += len(batch)
        batch.clear()

    seen: set[str] = set()
    for p in tqdm(todo, desc=f"expert targets ({','.join(cfg.experts)})", unit="img"):
        try:
            with Image.open(p) as f:
                im = f.convert("RGB")
        except (OSError, ValueError) as exc:
            bad.append(f"{p}: {exc}")
            counts["unreadable"] += 1
            continue
        key = image_key(im)
        if key in seen or cache.has(key, needed):
            counts["already cached"] += 1
            continue
        seen.add(key)
        batch.append((key, im))
        if len(batch) >= args.batch_size:
            flush()
    flush()

    print(f"cache {args.cache}: shard {args.shard_index}/{args.num_shards}, {len(todo)} images; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + (f"; rows without an image {missing_image}" if missing_image else ""))
    if written:
        size = sum(p.stat().st_size for p in written) / len(written)
        print(f"{cache.contents} entries: {size / 1024:.1f} KiB per image on average")
    for line in bad[:20]:
        print(f"  unreadable: {line}")
    return 1 if todo and counts["unreadable"] == len(todo) else 0


if __name__ == "__main__":
    sys.exit(main())
