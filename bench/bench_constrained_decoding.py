#!/usr/bin/env python
"""What constrained mask decoding costs during generation: ``model.generate`` at batch 8
with the masktok logits processor vs without it, same prompts, same number of new tokens
(``min_new_tokens = max_new_tokens``, greedy), rounds alternating, medians.

    python bench/bench_constrained_decoding.py [--batch 8] [--new-tokens 64] [--repeats 5]
    python bench/bench_constrained_decoding.py --arch qwen2_5_vl_3b --new-tokens 8 --repeats 3

Runs on the tiny offline Qwen2.5-VL with the 514 mask tokens added (as the mask-token loader
does). Its forward pass is tiny (a 2-layer, 64-wide decoder), so the processor's share of a
step is far larger here than on a real model, whose forward costs thousands of times more
while the processor's work (a few index operations over the vocabulary) stays the same: the
figure is an upper bound for real sizes. ``--arch`` builds a random-weight model of a real
architecture from its bundled config (bf16; the tokenizer of the tiny model of the same
family) to measure the share at that size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Please segment the red circle in this image.", "Where is the dog?",
           "Segment every chair.", "Find the blue square and describe it.",
           "Is there a car? Segment it.", "Please segment the person on the left.",
           "What is on the table?", "Segment the largest object."]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", dest="new_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--arch", default="tiny",
                    help="tiny, or a bundled config: qwen2_5_vl_3b, qwen2_5_vl_7b, qwen3_vl_4b, "
                         "qwen3_vl_8b (random weights, bf16)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer, LogitsProcessorList

    from svp.common.vocab import add_tokens
    from svp.masktok.tokens import MaskTokenLogitsProcessor, mask_token_list
    from svp.testing.tiny_model import cached_tiny_model

    torch.manual_seed(0)
    family = "qwen3_vl" if args.arch.startswith("qwen3_vl") else "qwen2_5_vl"
    path = cached_tiny_model(family, REPO / ".cache" / "tiny_models")
    if args.arch == "tiny":
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    else:
        from svp.common.memory_plan import resolve_config

        model = AutoModelForImageTextToText.from_config(resolve_config(args.arch),
                                                        dtype=torch.bfloat16)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    add_tokens(model, tokenizer, [(mask_token_list(), False)])
    processor = MaskTokenLogitsProcessor.from_tokenizer(tokenizer)
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[:args.batch]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)

    def generate(constrained: bool) -> float:
        kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                      do_sample=False, pad_token_id=tokenizer.pad_token_id)
        if constrained:
            kwargs["logits_processor"] = LogitsProcessorList([processor])
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - t0
        assert out.shape[1] == inputs["input_ids"].shape[1] + args.new_tokens
        return seconds

    generate(False), generate(True)  # warm-up
    times = {"plain": [], "constrained": []}
    for _ in range(args.repeats):
        times["plain"].append(generate(False))
        times["constrained"].append(generate(True))
    plain, constrained = (statistics.median(times[k]) for k in ("plain", "constrained"))
    tokens = args.batch * args.new_tokens
    overhead = constrained / plain - 1
    print(f"{args.arch}: batch {args.batch}, {args.new_tokens} new tokens each, median of "
          f"{args.repeats} alternating rounds, vocabulary "
          f"{model.get_input_embeddings().weight.shape[0]}")
    print(f"plain generate        {plain:7.3f} s  {tokens / plain:8.0f} tokens/s")
    print(f"constrained generate  {constrained:7.3f} s  {tokens / constrained:8.0f} tokens/s")
    bound = "; the tiny model's share is an upper bound for real sizes" if args.arch == "tiny" \
        else ""
    print(f"overhead: {100 * overhead:+.1f}% (goal <= 5%{bound})")
    if args.json:
        Path(args.json).write_text(json.dumps({"plain_tokens_s": tokens / plain,
                                               "constrained_tokens_s": tokens / constrained,
                                               "overhead": overhead}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
