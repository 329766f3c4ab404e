"""The PT stage's trainable set, written out (upstream's train_buffer rule, VLMTrainKit/neo/train/).

Upstream's README says stage 1 trains the pre-buffer; its ``set_model`` (never called) would
have matched ``"_h"`` (catching ``lm_head``) and compared the wrong name part with the layer
index (so no pre-buffer layer). The rule as intended: the patch embedding, every pre-buffer
layer whole, and the new H/W query/key channels and their norms in *every* layer; the LLM's
own weights, the embeddings and ``lm_head`` stay frozen. As an ms-swift
``--trainable_parameters_regex`` over the model's parameter names (full tuning, after
``--freeze_parameters_ratio 1``).
"""

from __future__ import annotations

import re

HW_TENSORS = ("q_proj_hw", "k_proj_hw", "q_norm_h", "q_norm_w", "k_norm_h", "k_norm_w")


def pt_trainable_regex(extra_layers: int) -> str:
    parts = [r"^vision_model\."]
    if extra_layers > 0:
        layers = "|".join(str(i) for i in range(extra_layers))
        parts.append(rf"^language_model\.model\.layers\.({layers})\.")
    parts.append(rf"\.self_attn\.({'|'.join(HW_TENSORS)})\.weight$")
    return "|".join(parts)


def pt_trainable(name: str, extra_layers: int) -> bool:
    """Whether parameter ``name`` trains in the PT stage (the regex, as ms-swift applies it)."""
    return re.search(pt_trainable_regex(extra_layers), name) is not None


def main(argv: list[str] | None = None) -> int:
    """``python -m svp.neo.freeze E``: print the regex (the PT recipes call this)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m svp.neo.freeze EXTRA_LAYERS", file=sys.stderr)
        return 2
    print(pt_trainable_regex(int(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
