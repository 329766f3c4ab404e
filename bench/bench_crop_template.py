#!/usr/bin/env python
"""Encode throughput of the crop template (crops cut on the fly) vs the stock ms-swift
Qwen template on the same samples with the crops pre-cut to files, in one run.

    python bench/bench_crop_template.py --arch qwen2_5_vl --samples 60 --repeats 3

Both paths see identical pixels: the stock rows list the main image already at the policy
size and the crops written by ``convert_vlmr3.py --crops-dir`` (the same cutting code), so
the difference is what the crop template adds (decoding the source once, cutting and sizing
two crops, text surgery) against reading two more PNG files. Prints samples/s (medians of
--repeats) and the ratio crop/stock (goal >= 0.9). Uses the tiny offline model's processor;
the encode cost does not depend on model size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_data(root: Path, n: int, arch: str) -> tuple[list[dict], list[dict]]:
    import numpy as np
    from PIL import Image

    from data_tools import convert_vlmr3
    from svp.croptool.geometry import CropPolicy

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    policy = CropPolicy(arch)
    src, sized = [], {}
    for i in range(n):
        w, h = int(rng.integers(500, 1300)), int(rng.integers(400, 1000))
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        name = f"img{i}.jpg"
        img.save(root / "images" / name, quality=90)
        main = policy.main_image(img)
        main.save(root / "images" / f"main{i}.png")
        sized[str((root / "images" / name).resolve())] = str(root / "images" / f"main{i}.png")
        b1 = [w * 0.05, h * 0.1, w * 0.4, h * 0.5]
        b2 = [w * 0.5, h * 0.3, w * 0.95, h * 0.9]
        a3 = (f"<think>\nleft {{Crop a [{', '.join(f'{v:.1f}' for v in b1)}]}}\nright "
              f"{{Crop b [{', '.join(f'{v:.1f}' for v in b2)}]}}\n</think>\n<answer>x</answer>")
        src.append({"image_path": name, "QnA": [{"Q": "What is there?", "A3": a3}]})
    (root / "src.jsonl").write_text("".join(json.dumps(r) + "\n" for r in src))
    common = ["--input", str(root / "src.jsonl"), "--image_base_path", str(root / "images"),
              "--family", arch]
    assert convert_vlmr3.main([*common, "--output", str(root / "fly.jsonl")]) == 0
    assert convert_vlmr3.main([*common, "--output", str(root / "pre.jsonl"),
                               "--crops-dir", str(root / "crops")]) == 0
    fly = [json.loads(x) for x in (root / "fly.jsonl").read_text().splitlines()]
    pre = [json.loads(x) for x in (root / "pre.jsonl").read_text().splitlines()]
    for r in pre:  # stock template: the main image already at the policy size
        r["images"][0] = sized[r["images"][0]]
    return fly, pre


def rate(template, rows, repeats: int) -> tuple[float, list[int]]:
    import copy

    times, lengths = [], []
    for _ in range(repeats):
        batch = copy.deepcopy(rows)
        t0 = time.perf_counter()
        enc = [template.encode(r) for r in batch]
        times.append(time.perf_counter() - t0)
        lengths = [len(e["input_ids"]) for e in enc]
    return len(rows) / statistics.median(times), lengths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from swift.model import get_model_processor
    from swift.template import get_template

    import plugins.croptool  # noqa: F401
    from svp.testing.tiny_model import cached_tiny_model

    model_dir = cached_tiny_model(args.arch, REPO / ".cache" / "tiny_models")
    model, processor = get_model_processor(str(model_dir), model_type=args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        fly, pre = make_data(Path(tmp), args.samples, args.arch)
        results = {}
        for name, ttype, rows in (("stock (pre-cut files)", args.arch, pre),
                                  ("crop template (on the fly)", f"{args.arch}_crop", fly)):
            template = get_template(processor, template_type=ttype)
            template.set_mode("train")
            template.model = model
            rate(template, rows[:3], 1)  # warm-up
            results[name] = rate(template, rows, args.repeats)
        (stock, ls), (crop, lc) = results.values()
        assert ls == lc, "the two paths must encode the same number of tokens"
    print(f"| path | samples/s ({args.arch}, {args.samples} samples x 2 crops, "
          f"median of {args.repeats}) |\n|---|---|")
    for name, (r, _) in results.items():
        print(f"| {name} | {r:.1f} |")
    print(f"\nratio crop/stock: {crop / stock:.2f} (goal >= 0.9); "
          f"tokens per sample identical: {statistics.mean(lc):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
