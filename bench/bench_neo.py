"""NEO's costs against the plain Qwen3 of the same depth and width, measured in one run.

Two figures:

1. **Training step** (forward + backward, AdamW not included) of NEO (``E`` pre-buffer layers
   + ``N`` LLM layers, Multi-Head Native Attention, the mixed mask through dense SDPA on CPU /
   flex attention on CUDA) against ``Qwen3ForCausalLM`` with ``E + N`` layers of the same
   widths on the same number of tokens: for the whole model (against HF's Qwen3 as it runs,
   full-vocabulary logits, and against Qwen3 given NEO's supervised-positions-only loss)
   and for one decoder layer, which isolates what MHNA (q/k twice as wide, two more
   projections, four more norms, three RoPEs) and the mask cost. NEO's row holds images
   (their context tokens attend bidirectionally); Qwen3 sees the same length of text.
2. **Batched generation**: greedy tokens/s of NEO's left-padded KV-cache decoding at batch
   ``B`` against the same prompts one at a time (upstream decodes batch 1 only).

Rounds alternate ours and stock; the figures are medians. Random weights, real code.

    python bench/bench_neo.py [--hidden 512] [--layers 4] [--extra 2] [--seq 1024] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def configs(hidden: int, heads: int, kv: int, layers: int, extra: int, vocab: int):
    from transformers import Qwen3Config

    from svp.neo.configuration import NEOChatConfig

    d = hidden // heads
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                  num_attention_heads=heads, num_key_value_heads=kv, head_dim=d,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                  tie_word_embeddings=True)
    qwen = Qwen3Config(num_hidden_layers=layers + extra, **common)
    qwen._attn_implementation = "sdpa"
    neo = NEOChatConfig(llm_config=dict(num_hidden_layers=layers + extra,
                                        extra_num_layers=extra, **common),
                        vision_config=dict(llm_hidden_size=hidden, hidden_size=256),
                        img_context_token_id=vocab - 3, img_start_token_id=vocab - 2,
                        img_end_token_id=vocab - 1)
    return qwen, neo


def packed_row(cfg, seq: int, n_samples: int, image_grid: int, g: torch.Generator):
    """A packed row of ``n_samples`` samples, each text + one image of ``image_grid`` x
    ``image_grid`` patches + text, filling ``seq`` tokens; labels on the trailing text."""
    per = seq // n_samples
    n_img = (image_grid // 2) ** 2
    ids, labels, bounds = [], [], [0]
    for _ in range(n_samples):
        text = per - n_img - 2
        head, tail = text // 4, text - text // 4
        sample = (torch.randint(0, 1000, (head,), generator=g).tolist()
                  + [cfg.img_start_token_id] + [cfg.img_context_token_id] * n_img
                  + [cfg.img_end_token_id] + torch.randint(0, 1000, (tail,), generator=g).tolist())
        ids += sample
        labels += [-100] * (len(sample) - tail) + sample[-tail:]
        bounds.append(len(ids))
    pixels = torch.randn(n_samples * image_grid ** 2, 768, generator=g)
    grid = torch.tensor([[image_grid, image_grid]] * n_samples)
    return (torch.tensor([ids]), torch.tensor([labels]), torch.tensor(bounds), pixels, grid)


def timed(fn, warmup: int = 1, repeats: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_figures(args) -> dict:
    from transformers import Qwen3ForCausalLM

    from svp.neo.mask import dense_mask
    from svp.neo.modeling import NativeRope, NEOChatModel

    torch.manual_seed(0)
    qcfg, ncfg = configs(args.hidden, args.heads, args.kv, args.layers, args.extra, args.vocab)
    qwen, neo = Qwen3ForCausalLM(qcfg).train(), NEOChatModel(ncfg).train()
    neo.attn_backend = "sdpa" if not torch.cuda.is_available() else "flex"
    g = torch.Generator().manual_seed(0)
    ids, labels, bounds, pixels, grid = packed_row(ncfg, args.seq, args.samples, args.grid, g)
    text_ids = torch.randint(0, 1000, ids.shape, generator=g)
    text_labels = torch.where(labels == -100, labels, text_ids)

    def neo_step():
        neo.zero_grad(set_to_none=True)
        neo(ids, pixels, grid, labels=labels, seq_boundaries=bounds).loss.backward()

    def qwen_step():
        qwen.zero_grad(set_to_none=True)
        qwen(text_ids, labels=text_labels).loss.backward()

    def qwen_step_supervised():  # the same loss trick as NEO: logits of supervised positions
        from svp.neo.loss import supervised_lm_loss

        qwen.zero_grad(set_to_none=True)
        hidden = qwen.model(text_ids).last_hidden_state
        supervised_lm_loss(hidden, qwen.lm_head, text_labels).backward()

    # one decoder layer, forward + backward, same hidden states
    h = torch.randn(1, ids.shape[1], args.hidden, requires_grad=True)
    x = neo.prepare_native_inputs(ids, pixels, grid, bounds)
    rope_ = NativeRope.build(ncfg.llm_config, x.t, x.h, x.w, torch.float32)
    nlayer = neo.language_model.model.layers[0]
    qlayer = qwen.model.layers[0]
    pos = torch.arange(ids.shape[1])[None]
    qrope = qwen.model.rotary_emb(h, pos)
    causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()[None, None]

    def neo_layer():
        nlayer(h, rope_=rope_, attn_mask=dense_mask(x.doc, x.img, x.valid)).sum().backward()

    def qwen_layer():
        qlayer(h, attention_mask=causal, position_embeddings=qrope).sum().backward()

    out = {"neo_step": [], "qwen_step": [], "qwen_step_sup": [], "neo_layer": [],
           "qwen_layer": []}
    for _ in range(args.rounds):
        out["neo_step"].append(timed(neo_step))
        out["qwen_step"].append(timed(qwen_step))
        out["qwen_step_sup"].append(timed(qwen_step_supervised))
        out["neo_layer"].append(timed(neo_layer))
        out["qwen_layer"].append(timed(qwen_layer))
    med = {k: statistics.median(v) for k, v in out.items()}
    med["step_ratio"] = med["neo_step"] / med["qwen_step"]
    med["step_ratio_sup"] = med["neo_step"] / med["qwen_step_sup"]
    med["layer_ratio"] = med["neo_layer"] / med["qwen_layer"]
    med["tokens"] = int(ids.shape[1])
    med["mask_s"] = timed(lambda: dense_mask(x.doc, x.img, x.valid), repeats=5)
    return med


def generation_figures(args) -> dict:
    from svp.neo.modeling import NEOChatModel

    torch.manual_seed(0)
    _, ncfg = configs(args.hidden, args.heads, args.kv, args.layers, args.extra, args.vocab)
    model = NEOChatModel(ncfg).eval()
    model.attn_backend = "sdpa"
    g = torch.Generator().manual_seed(1)
    lengths = [args.prompt - 8 * (i % 4) for i in range(args.gen_batch)]
    prompts = [torch.randint(0, 1000, (n,), generator=g) for n in lengths]
    width = max(lengths)
    batch = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    kw = dict(max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
              pad_token_id=0)

    def batched():
        model.generate(batch, mask, **kw)

    def one_by_one():
        for p in prompts:
            model.generate(p[None], **kw)

    tb, t1 = [], []
    for _ in range(args.rounds):
        tb.append(timed(batched, repeats=1))
        t1.append(timed(one_by_one, repeats=1))
    new = args.new_tokens * len(prompts)
    return {"batched_tok_s": new / statistics.median(tb),
            "single_tok_s": new / statistics.median(t1), "gen_batch": len(prompts)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4, help="LLM layers")
    ap.add_argument("--extra", type=int, default=2, help="pre-buffer layers")
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--seq", type=int, default=1024, help="tokens of the packed row")
    ap.add_argument("--samples", type=int, default=4, help="samples packed in the row")
    ap.add_argument("--grid", type=int, default=16, help="patch grid side of each image")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gen-batch", dest="gen_batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new-tokens", dest="new_tokens", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    figures = {**step_figures(args), **generation_figures(args),
               "threads": torch.get_num_threads()}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
