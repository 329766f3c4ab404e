#!/usr/bin/env python
"""Encode throughput of the crop template (crops cut on the fly) vs the stock ms-swift
Qwen template on the same samples with the crops pre-cut to files, in one run.

    python bench/bench_crop_template.py --arch qwen2_5_vl --samples 60 --repeats 5

Both paths see identical pixels: the stock rows list the main image already at the policy
size and the crops written by ``convert_vlmr3.py --crops-dir`` (the same cutting code), so
the difference is what the crop template adds (decoding the source once, cutting and sizing
two crops, text surgery) against reading two more PNG files. The two paths alternate,
round by round; prints samples/s (medians of --repeats rounds), the ratio crop/stock (goal
>= 0.95) and the spread of the per-round ratios. Uses the tiny offline model's processor;
the encode cost does not depend on model size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_data(root: Path, n: int, arch: str) -> tuple[list[dict], list[dict]]:
    import numpy as np
    from PIL import Image

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
    convert = [sys.executable, str(REPO / "data_tools" / "convert_vlmr3.py"), *common]
    subprocess.run([*convert, "--output", str(root / "fly.jsonl")], check=True,
                   capture_output=True)
    subprocess.run([*convert, "--output", str(root / "pre.jsonl"), "--crops-dir",
                    str(root / "crops")], check=True, capture_output=True)
    fly = [json.loads(x) for x in (root / "fly.jsonl").read_text().splitlines()]
    pre = [json.loads(x) for x in (root / "pre.jsonl").read_text().splitlines()]
    for r in pre:  # stock template: the main image already at the policy size
        r["images"][0] = sized[r["images"][0]]
    return fly, pre


def encode_time(template, rows) -> tuple[float, list[int]]:
    """Seconds to encode a fresh copy of ``rows`` once, and the token counts."""
    import copy

    batch = copy.deepcopy(rows)
    t0 = time.perf_counter()
    enc = [template.encode(r) for r in batch]
    return time.perf_counter() - t0, [len(e["input_ids"]) for e in enc]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    from swift.model import get_model_processor
    from swift.template import get_template
    from swift.utils.utils import import_external_file

    from svp.testing.tiny_model import cached_tiny_model

    import_external_file(str(REPO / "plugins" / "croptool.py"))  # as --external_plugins does
    model_dir = cached_tiny_model(args.arch, REPO / ".cache" / "tiny_models")
    model, processor = get_model_processor(str(model_dir), model_type=args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        fly, pre = make_data(Path(tmp), args.samples, args.arch)
        paths = {"stock (pre-cut files)": (args.arch, pre),
                 "crop template (on the fly)": (f"{args.arch}_crop", fly)}
        templates = {}
        for name, (ttype, rows) in paths.items():
            template = get_template(processor, template_type=ttype)
            template.set_mode("train")
            template.model = model
            encode_time(template, rows[:3])  # warm-up
            templates[name] = template
        # alternate the two paths, so a slow moment of the machine hits both alike
        times = {name: [] for name in paths}
        lengths = {}
        for _ in range(args.repeats):
            for name, (_, rows) in paths.items():
                seconds, lengths[name] = encode_time(templates[name], rows)
                times[name].append(seconds)
        stock_l, crop_l = lengths.values()
        assert stock_l == crop_l, "the two paths must encode the same number of tokens"
    rates = {name: args.samples / statistics.median(t) for name, t in times.items()}
    stock, crop = rates.values()
    pairs = [s / c for s, c in zip(*times.values(), strict=True)]  # per-round crop/stock
    print(f"| path | samples/s ({args.arch}, {args.samples} samples x 2 crops, "
          f"median of {args.repeats} alternating rounds) |\n|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {r:.1f} |")
    print(f"\nratio crop/stock: {crop / stock:.3f} (goal >= 0.95); per round "
          f"{min(pairs):.3f}-{max(pairs):.3f}; tokens per sample identical: "
          f"{statistics.mean(crop_l):.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"stock": stock, "crop": crop,
                                               "ratio": crop / stock, "rounds": pairs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
