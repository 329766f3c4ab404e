#!/usr/bin/env bash
# Mask-token SFT (SAMTok) settings on top of recipes/sft_registry.sh, as upstream's recipes:
# LoRA r128 / alpha 256 / dropout 0.05 on all linear layers (SAMTok's XTuner configs, as
# reported second-hand: the configs were not readable to us), embed_tokens and lm_head
# trained and saved (the 514 new rows), ViT and aligner frozen, lr 2e-5, bf16, one epoch,
# plain next-token loss. LOSS_SCALE=default+mask_span weights mask spans by
# SVP_MASK_LOSS_WEIGHT (2.0): our option, not the published method.
# Called by sft_qwen3vl_4b.sh / sft_qwen25vl_3b.sh, which only choose the model; every knob
# stays an environment variable. The base model needs no preparation: plugins/masktok.py
# adds the tokens when ms-swift loads it.
set -euo pipefail
: "${MODEL:?set MODEL (or use recipes/sft_qwen3vl_4b.sh / sft_qwen25vl_3b.sh)}"
: "${MODEL_TYPE:?set MODEL_TYPE (qwen3_vl or qwen2_5_vl)}"
export OUTPUT_DIR=${OUTPUT_DIR:-output/samtok_$(basename "$MODEL")}
export TUNER=${TUNER:-lora} LORA_RANK=${LORA_RANK:-128} LORA_ALPHA=${LORA_ALPHA:-256}
export LORA_DROPOUT=${LORA_DROPOUT:-0.05}
export LR=${LR:-2e-5} DTYPE=${DTYPE:-bfloat16}
export BATCH=${BATCH:-4} GRAD_ACC=${GRAD_ACC:-1} MAX_LENGTH=${MAX_LENGTH:-8192}
export PLUGINS=${PLUGINS:-masktok}
# TUNER=lora_new_rows trains only the 514 new rows instead of the two whole matrices
if [[ "$TUNER" == lora_new_rows ]]; then
  export MODULES_TO_SAVE=${MODULES_TO_SAVE:-}
else
  export MODULES_TO_SAVE=${MODULES_TO_SAVE:-embed_tokens lm_head}
fi
export LOSS_SCALE=${LOSS_SCALE:-default}
exec bash "$(dirname "${BASH_SOURCE[0]}")/sft_registry.sh"
