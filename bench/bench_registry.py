#!/usr/bin/env python
"""What the registry's validation costs: loading a LLaVA JSONL through the registry plugin
(read, validate every row and image header, convert, then ms-swift's preprocessing) versus
ms-swift's stock loader on the same file (no validation), measured in one run.

    python bench/bench_registry.py --rows 20000 --images 200 --repeats 3

Each repeat writes the annotation file under a new name so HuggingFace's dataset cache
cannot serve the stock path from an earlier repeat. Prints medians and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int) -> list[Path]:
    from svp.testing.synthetic import draw_shape_image

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img, _ = draw_shape_image(rng, 224, 168)
        p = folder / f"img_{i:05d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def write_rows(path: Path, images: list[Path], n_rows: int) -> None:
    rng = random.Random(1)
    with path.open("w") as f:
        for i in range(n_rows):
            f.write(json.dumps({"id": i, "image": str(rng.choice(images)), "conversations": [
                {"from": "human", "value": "<image>\nDescribe the shape in one sentence."},
                {"from": "gpt", "value": "A small coloured shape on a textured background."},
            ]}) + "\n")


def _meta_loader(path: str):
    """The loader ms-swift picks for a plain path (must be the stock one for a fair run)."""
    from swift.dataset import DatasetSyntax

    syntax = DatasetSyntax.parse(path)
    return syntax.get_dataset_meta(False).loader()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from swift.dataset import load_dataset

    from svp.dataset_registry.swift_plugin import RegistryDatasetLoader, register

    work = Path(tempfile.mkdtemp(prefix="bench_registry_"))
    images = make_images(work / "images", args.images)
    stock_t, ours_t = [], []
    for r in range(args.repeats):
        ann = work / f"rows_{r}.jsonl"
        write_rows(ann, images, args.rows)
        t0 = time.perf_counter()
        stock, _ = load_dataset([str(ann)], shuffle=False)  # no registry entry points here
        stock_t.append(time.perf_counter() - t0)
        ann2 = work / f"rows_{r}_b.jsonl"
        ann2.write_bytes(ann.read_bytes())
        reg = work / f"reg_{r}.yaml"
        reg.write_text(f"bench_{r}: {{annotation_path: {ann2}}}\n")
        register([str(reg)])
        t0 = time.perf_counter()
        ours, _ = load_dataset([f"bench_{r}"], shuffle=False)
        ours_t.append(time.perf_counter() - t0)
        assert len(stock) == len(ours) == args.rows
        assert not isinstance(_meta_loader(str(ann)), RegistryDatasetLoader)
    s, o = statistics.median(stock_t), statistics.median(ours_t)
    print(f"\n{args.rows} LLaVA rows, {args.images} distinct JPEGs, {args.repeats} repeats, "
          f"{os.cpu_count()} CPUs")
    print(f"{'path':<44} {'median s':>9} {'rows/s':>9}")
    print(f"{'stock ms-swift load_dataset(path)':<44} {s:>9.2f} {args.rows / s:>9.0f}")
    print(f"{'registry (validate + convert + preprocess)':<44} {o:>9.2f} {args.rows / o:>9.0f}")
    print(f"time ratio registry / stock: {o / s:.2f}  (throughput ratio {s / o:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"stock_rows_s": args.rows / s,
                                               "registry_rows_s": args.rows / o}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
