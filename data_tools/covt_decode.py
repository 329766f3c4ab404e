"""Decode a CoVT answer's visual-thought tokens into pictures (masks, depth, edges).

    SVP_COVT_EXPERTS=sam,depth,dino python data_tools/covt_decode.py \\
        --model output/covt_merged [--adapters output/.../checkpoint-N] \\
        --image photo.jpg --question "How many chairs?" \\
        --answer "<think> Because the segmentation of the image is <|anchor_start|>..." \\
        --out decoded/

``--answer`` is the model's generated text (from ``swift infer``); ``--answer generate``
generates it here (greedy). The sequence is replayed through the model, the hidden states at
each expert's tokens go through the trained heads and the expert's frozen decoder, and one
PNG per expert is written: image | decoded from the tokens | the expert itself, with the
loss and the loss of zero tokens. ``decoded.json`` lists files and losses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapters", default=None)
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--question", default="What is in the image?")
    ap.add_argument("--answer", required=True, help="generated text, or 'generate'")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--max_new_tokens", type=int, default=256)
    args = ap.parse_args(argv)

    import torch
    from PIL import Image
    from swift.model import get_model_processor
    from swift.template import get_template

    from svp.covt import swift_plugin as covt
    from svp.covt.decode import render

    covt.register()
    model, processor = get_model_processor(args.model, model_type=covt.MODEL_TYPE,
                                           torch_dtype=torch.float32)
    if args.adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapters)
    model.eval()
    template = get_template(processor, template_type=covt.TEMPLATE)
    template.model = model
    image = Image.open(args.image).convert("RGB")
    question = "<image>" + args.question.replace("<image>", "")
    answer = args.answer
    if answer == "generate":
        template.set_mode("pt")
        enc = template.encode({"messages": [{"role": "user", "content": question}],
                               "images": [image]})
        batch = template.data_collator([enc])
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                         "pixel_values", "image_grid_thw")}
        with torch.no_grad():
            ids = model.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=False)
        answer = processor.tokenizer.decode(ids[0, batch["input_ids"].shape[1]:],
                                            skip_special_tokens=False)
        answer = answer.split("<|im_end|>")[0]
    results, missing = covt.decode_answer(model, template, image,
                                          [{"role": "user", "content": question}], answer)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"answer": answer, "experts": {}}
    for name, res in results.items():
        path = args.out / f"{args.image.stem}_{name}.png"
        render(name, res, image).save(path)
        summary["experts"][name] = {"png": str(path), "loss": res["loss"],
                                    "zero_token_loss": res["zero_loss"]}
        print(f"{name}: loss {res['loss']:.4g} (zero tokens {res['zero_loss']:.4g}) -> {path}")
    if missing:
        print(f"no complete token group in the answer for: {', '.join(missing)}")
    summary["missing"] = missing
    (args.out / "decoded.json").write_text(json.dumps(summary, indent=1))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
