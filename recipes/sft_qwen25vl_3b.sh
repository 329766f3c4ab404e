#!/usr/bin/env bash
# Mask-token SFT of Qwen2.5-VL-3B on registry datasets written by tokenize_gres.py /
# tokenize_dam.py (settings: recipes/sft_masktok.sh; knobs: recipes/sft_registry.sh).
# Qwen2.5-VL-3B ties embed_tokens and lm_head; both are saved whole in each checkpoint.
#
#   SVP_DATASET_REGISTRY=data/gres/datasets.yaml DATASETS="gres_train" \
#   NPROC_PER_NODE=8 DEEPSPEED=zero2 bash recipes/sft_qwen25vl_3b.sh
set -euo pipefail
export MODEL=${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct} MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl}
export OUTPUT_DIR=${OUTPUT_DIR:-output/samtok_qwen25vl_3b}
exec bash "$(dirname "${BASH_SOURCE[0]}")/sft_masktok.sh"
