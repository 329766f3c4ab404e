"""NEO's parameter counts for the memory planner (svp/common/memory_plan.py), registered
there by model type so the planner depends on no capability."""

from __future__ import annotations

from svp.common.memory_plan import META_COUNTERS, Counts


def count_on_meta(data: dict) -> Counts:
    """NEO built on the meta device from a config dict, counted by part: the patch embedding
    counts as vision; q/k widths are 2 x head_dim (Multi-Head Native Attention); the partial
    set is the PT stage's (svp/neo/freeze.py)."""
    import torch
    from torch import nn

    from svp.neo.configuration import NEOChatConfig
    from svp.neo.freeze import pt_trainable
    from svp.neo.modeling import NEOChatModel

    config = NEOChatConfig(**{k: v for k, v in data.items() if k != "model_type"})
    with torch.device("meta"):
        model = NEOChatModel(config)
    text = config.llm_config
    by = dict.fromkeys(("vision", "aligner", "language", "embed", "lm_head"), 0)
    pt = 0
    for name, p in model.named_parameters():  # a tied lm_head is listed once, as the embedding
        part = ("vision" if name.startswith("vision_model.") else
                "embed" if "embed_tokens" in name else
                "lm_head" if "lm_head" in name else "language")
        by[part] += p.numel()
        pt += p.numel() if pt_trainable(name, text.extra_num_layers) else 0
    body = model.language_model.model
    lora = sum(m.in_features + m.out_features for m in body.layers.modules()
               if isinstance(m, nn.Linear))
    layer = max(sum(p.numel() for p in block.parameters()) for block in body.layers)
    d = text.head_dim
    return Counts(total=sum(by.values()), **by, lora_per_rank=lora,
                  largest_layer=max(layer, by["embed"], by["lm_head"]),
                  hidden=text.hidden_size, heads_dim=2 * text.num_attention_heads * d,
                  kv_dim=2 * text.num_key_value_heads * d,
                  intermediate=text.intermediate_size, layers=text.num_hidden_layers,
                  vocab=text.vocab_size, partial_trainable=pt)


def register() -> None:
    META_COUNTERS["neo_chat"] = count_on_meta
