"""Growing a model's vocabulary while ms-swift loads it (shared by the mask-token and CoVT
loaders): tokens go into the tokenizer, and, when a real model is loaded, into its input
embeddings / LM head (svp/common/vocab.py) with the config's ``vocab_size`` kept in step."""

from __future__ import annotations


def grow_vocabulary(loader, model, processor, config, groups: list[tuple[list[str], bool]],
                    seed: int = 0) -> dict:
    """Add each group of (tokens, special) the tokenizer lacks. Returns the summary of
    :func:`svp.common.vocab.add_tokens` (tokenizer only: ``added``, ``tokenizer_len``)."""
    from svp.common.vocab import add_tokens, add_tokens_to_tokenizer

    tokenizer = loader._get_tokenizer(processor)
    if model is None or getattr(loader, "return_dummy_model", False):
        added = [t for tokens, special in groups
                 for t in add_tokens_to_tokenizer(tokenizer, tokens, special)]
        return {"added": len(added), "tokenizer_len": len(tokenizer)}
    from swift.model.patcher import get_lm_head_model
    from swift.utils import HfConfigFactory

    from svp.common.swift_new_rows import mark_new_rows

    summary = add_tokens(get_lm_head_model(model, loader.model_meta), tokenizer, groups, seed)
    # every group's rows, added now or already there: what --tuner_type lora_new_rows trains
    mark_new_rows(model, tokenizer.convert_tokens_to_ids([t for tokens, _ in groups
                                                          for t in tokens]))
    if summary["added"]:
        HfConfigFactory.set_config_attr(config, "vocab_size", summary["rows_after"])
    return summary


def growth_message(summary: dict, what: str) -> str | None:
    """The log line of one growth (None when nothing was added): rows before -> after and
    the digest of the new rows, which the two-process tests compare with one process's."""
    if not summary["added"]:
        return None
    if "rows_after" not in summary:
        return f"added {summary['added']} {what} to the tokenizer"
    return (f"added {summary['added']} {what}; embedding rows {summary['rows_before']} -> "
            f"{summary['rows_after']}; new rows digest {summary['rows_digest']}")
