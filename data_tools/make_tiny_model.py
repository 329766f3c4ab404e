#!/usr/bin/env python
"""Build an offline, seeded, random-weight Qwen2.5-VL / Qwen3-VL model directory.

    python data_tools/make_tiny_model.py --arch qwen2_5_vl --out models/tiny-qwen2_5_vl
    swift sft --model models/tiny-qwen2_5_vl --model_type qwen2_5_vl --template qwen2_5_vl ...

The directory holds a small config of the real architecture, a locally built byte-level BPE
tokenizer with every Qwen special token at its real id, the chat template and the default
image/video processors (see svp/testing/tiny_model.py for why the ids matter).
"""

from __future__ import annotations

import argparse

from svp.testing.tiny_model import ARCHES, TinySpec, build_tiny_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, choices=ARCHES)
    ap.add_argument("--out", required=True, help="model directory to write (replaced)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=TinySpec.hidden)
    ap.add_argument("--layers", type=int, default=TinySpec.layers)
    args = ap.parse_args(argv)
    spec = TinySpec(hidden=args.hidden, layers=args.layers)
    out = build_tiny_model(args.arch, args.out, seed=args.seed, spec=spec)
    print(f"wrote {args.arch} tiny model to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
