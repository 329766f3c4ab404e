#!/usr/bin/env bash
# Mask-token SFT (SAMTok) of Qwen2.5-VL-3B on registry datasets written by tokenize_gres.py /
# tokenize_dam.py: LoRA r64 / alpha 128 on all linear layers, embed_tokens and lm_head trained
# and saved (the 514 new rows), ViT and aligner frozen, lr 2e-5, bf16, mask spans weighted.
#
#   SVP_DATASET_REGISTRY=data/gres/datasets.yaml DATASETS="gres_train%100" \
#   NPROC_PER_NODE=8 DEEPSPEED=zero2 bash recipes/sft_qwen25vl_3b.sh
#
# Every knob of recipes/sft_registry.sh is an environment variable here too (MODEL, LR,
# BATCH, GRAD_ACC, EPOCHS, MAX_LENGTH, MAX_PIXELS, OUTPUT_DIR, SVP_MASK_LOSS_WEIGHT, ...).
# The base model needs no preparation: plugins/masktok.py adds the tokens at load time.
# Qwen2.5-VL-3B ties embed_tokens and lm_head; both are saved whole in each checkpoint.
set -euo pipefail
export MODEL=${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}
export MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl}
export OUTPUT_DIR=${OUTPUT_DIR:-output/samtok_qwen25vl_3b}
export TUNER=${TUNER:-lora} LORA_RANK=${LORA_RANK:-64} LORA_ALPHA=${LORA_ALPHA:-128}
export LR=${LR:-2e-5} DTYPE=${DTYPE:-bfloat16}
export BATCH=${BATCH:-4} GRAD_ACC=${GRAD_ACC:-1} MAX_LENGTH=${MAX_LENGTH:-8192}
export PLUGINS=${PLUGINS:-masktok}
export MODULES_TO_SAVE=${MODULES_TO_SAVE:-embed_tokens lm_head}
export LOSS_SCALE=${LOSS_SCALE:-default+mask_span}
exec bash "$(dirname "${BASH_SOURCE[0]}")/sft_registry.sh"
