#!/usr/bin/env bash
# Mask-token SFT of Qwen3-VL-4B on registry datasets written by tokenize_gres.py /
# tokenize_dam.py (settings: recipes/sft_masktok.sh; knobs: recipes/sft_registry.sh).
#
#   SVP_DATASET_REGISTRY=data/gres/datasets.yaml DATASETS="gres_train" \
#   NPROC_PER_NODE=8 DEEPSPEED=zero2 bash recipes/sft_qwen3vl_4b.sh
set -euo pipefail
export MODEL=${MODEL:-Qwen/Qwen3-VL-4B-Instruct} MODEL_TYPE=${MODEL_TYPE:-qwen3_vl}
export OUTPUT_DIR=${OUTPUT_DIR:-output/samtok_qwen3vl_4b}
# SAMTok's ms-swift recipe: IMAGE_MAX_TOKEN_NUM=2048, i.e. 2048 x 32^2 pixels on Qwen3-VL
export MAX_PIXELS=${MAX_PIXELS:-2097152}
exec bash "$(dirname "${BASH_SOURCE[0]}")/sft_masktok.sh"
