#!/usr/bin/env python
"""Add the 514 SAMTok mask tokens to a Qwen2.5-VL / Qwen3-VL checkpoint.

    python data_tools/add_special_tokens.py --model Qwen/Qwen3-VL-4B-Instruct \
        --out models/Qwen3-VL-4B-MT256x2

Tokens are added as non-special tokens (decoding with skip_special_tokens keeps them), new
embedding rows (and head rows when untied) start at mean + 0.02 x std x N(0,1) of the
existing rows, and the embedding matrix is only ever grown (to a multiple of 128), never
shrunk. Model, tokenizer and processor are saved to --out. Without this step,
plugins/masktok.py adds the same tokens the same way when ms-swift loads the model. (ms-swift's
own --new_special_tokens would add them as *special* tokens, which skip_special_tokens
decoding drops; the plugin refuses mask tokens there.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from svp.common.vocab import add_tokens
from svp.masktok.tokens import mask_token_list


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (or hub id where reachable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="auto", help="auto | bfloat16 | float32 ...")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype)
    summary = add_tokens(model, processor.tokenizer, [(mask_token_list(), False)], seed=args.seed)
    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"added {summary['added']} tokens (tokenizer {summary['tokenizer_len']}), embedding "
          f"rows {summary['rows_before']} -> {summary['rows_after']}"
          f"{' (tied head)' if summary['tied_head'] else ''}; saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
