#!/usr/bin/env python
"""Crop-tool inference: the model asks for crops, we cut them, it reads them and goes on.

    python data_tools/crop_infer.py --model_path output/crop_sft/checkpoint-500 \
        --image_path scene.jpg --question "What is written on the sign?" \
        --max_new_tokens 512 --temperature 0 --output_json out.json

Batch: ``--batch_file rows.jsonl`` with ``{"image": ..., "question": ...}`` per line. LoRA
checkpoints: ``--model_path BASE --adapters CKPT``. ``--assistant_prefix`` prefills the
answer (a prefix ending in a ``<tool_call>`` executes that crop first). The JSON holds, per
sample, ``think``, ``answer``, ``tool_calls`` (boxes as the model wrote them and in original
pixels), ``invalid_calls`` with reasons, and the paths of the crops (PNG beside the JSON).
Engines: ms-swift's transformers engine, or ``--backend vllm`` where vLLM is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_path", required=True)
    ap.add_argument("--model_type", default=None, help="qwen2_5_vl / qwen3_vl (default: detect)")
    ap.add_argument("--adapters", nargs="*", default=None)
    ap.add_argument("--image_path", default=None)
    ap.add_argument("--question", default=None)
    ap.add_argument("--batch_file", type=Path, default=None)
    ap.add_argument("--assistant_prefix", default="")
    ap.add_argument("--max_new_tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--max_crops", "--max-crops", type=int, default=8, dest="max_crops")
    ap.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    ap.add_argument("--output_json", required=True)
    args = ap.parse_args(argv)

    if args.batch_file:
        rows = [json.loads(x) for x in args.batch_file.read_text().splitlines() if x.strip()]
        bad = [i for i, r in enumerate(rows, 1) if not {"image", "question"} <= set(r)]
        if bad:
            print(f"error: {args.batch_file}: lines {bad[:5]} lack 'image' or 'question'",
                  file=sys.stderr)
            return 2
        images, questions = [r["image"] for r in rows], [r["question"] for r in rows]
    elif args.image_path and args.question:
        images, questions = [args.image_path], [args.question]
    else:
        print("error: give --image_path and --question, or --batch_file", file=sys.stderr)
        return 2
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        print(f"error: image not found: {missing[0]}", file=sys.stderr)
        return 2

    from svp.croptool.swift_inference import CropToolInference, save_results

    inf = CropToolInference(args.model_path, model_type=args.model_type, adapters=args.adapters,
                            max_crops=args.max_crops, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, backend=args.backend)
    results = inf.batch_generate(images, questions, [args.assistant_prefix] * len(images))
    out = save_results(results, args.output_json)
    for r in results:
        print(f"crops {len(r.tool_calls)} (invalid {len(r.invalid_calls)}), rounds {r.rounds}, "
              f"answer: {r.answer!r}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
