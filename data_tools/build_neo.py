#!/usr/bin/env python
"""Turn a Qwen3 LLM into a NEO-init checkpoint that every NEO stage loads with from_pretrained.

    modelscope download --model Qwen/Qwen3-1.7B-Base --local_dir models/Qwen3-1.7B-Base
    python data_tools/build_neo.py --llm models/Qwen3-1.7B-Base --extra-layers 12 \
        --out models/neo-2b-init
    MODEL=models/neo-2b-init DATASETS=... bash recipes/neo_2b_pt.sh

LLM layer i becomes layer i + E behind E new pre-buffer layers; q_proj_hw comes from q_proj,
k_proj_hw is zero, so ``--extra-layers 0`` reproduces the LLM's logits exactly (see
svp/neo/convert.py). NEO's 13 tokens are added at their upstream ids (151669..151681).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from svp.neo.build import BuildOptions, build_neo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = BuildOptions(extra_layers=0)
    ap.add_argument("--llm", required=True, help="Qwen3 LLM directory (safetensors)")
    ap.add_argument("--extra-layers", type=int, required=True,
                    help="pre-buffer depth E (NEO-2B: 12, NEO-9B: 6)")
    ap.add_argument("--out", required=True, help="checkpoint directory to write (replaced)")
    ap.add_argument("--seed", type=int, default=d.seed, help="pre-buffer / vision init seed")
    ap.add_argument("--rope-theta-hw", type=float, default=d.rope_theta_hw)
    ap.add_argument("--rope-theta-vision", type=float, default=d.rope_theta_vision,
                    help="patch-feature 2-D RoPE base (upstream kit default 1000)")
    ap.add_argument("--vision-hidden", type=int, default=d.vision_hidden)
    ap.add_argument("--min-pixels", type=int, default=d.min_pixels)
    ap.add_argument("--max-pixels", type=int, default=d.max_pixels)
    a = ap.parse_args(argv)
    llm = Path(a.llm).expanduser()
    if not (llm / "config.json").is_file():  # a hub id went to transformers as a path
        print(f"error: --llm {a.llm}: no local model folder with config.json; download it "
              f"first, e.g. modelscope download --model {a.llm} --local_dir models/"
              f"{Path(a.llm).name} (or hf download {a.llm} --local-dir models/"
              f"{Path(a.llm).name}), then pass --llm models/{Path(a.llm).name}",
              file=sys.stderr)
        return 2
    build_neo(a.llm, a.out, BuildOptions(
        extra_layers=a.extra_layers, seed=a.seed, rope_theta_hw=a.rope_theta_hw,
        rope_theta_vision=a.rope_theta_vision, vision_hidden=a.vision_hidden,
        min_pixels=a.min_pixels, max_pixels=a.max_pixels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
