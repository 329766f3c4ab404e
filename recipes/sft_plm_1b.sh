#!/usr/bin/env bash
# Mask-token SFT of PerceptionLM-1B with SAMTok's settings (its XTuner config
# perceptionlm_1b_mt256x2.py): the whole LLM trained (embeddings and LM head with it, so the
# 514 new rows train), vision encoder and projector frozen, AdamW lr 2e-5 without weight
# decay, gradient clip 1, 3% warmup then cosine, batch 4 per device, one epoch, max length
# 16384, bf16, images cut into at most 8 tiles + a thumbnail (SVP_PLM_MAX_TILES).
# --model_type perception_lm comes from plugins/masktok.py (ms-swift 4.6 has none).
#
#   SVP_DATASET_REGISTRY=data/gres/datasets.yaml DATASETS="gres_train" \
#   NPROC_PER_NODE=8 DEEPSPEED=zero2 bash recipes/sft_plm_1b.sh
#
# Knobs: recipes/sft_registry.sh.
set -euo pipefail
export MODEL=${MODEL:-facebook/Perception-LM-1B} MODEL_TYPE=${MODEL_TYPE:-perception_lm}
export OUTPUT_DIR=${OUTPUT_DIR:-output/samtok_plm_1b}
export TUNER=${TUNER:-full} LR=${LR:-2e-5} DTYPE=${DTYPE:-bfloat16}
export BATCH=${BATCH:-4} GRAD_ACC=${GRAD_ACC:-1} MAX_LENGTH=${MAX_LENGTH:-16384}
export PLUGINS=${PLUGINS:-masktok} LOSS_SCALE=${LOSS_SCALE:-default}
export SVP_PLM_MAX_TILES=${SVP_PLM_MAX_TILES:-8}
export EXTRA_ARGS="--weight_decay 0 --max_grad_norm 1 --warmup_ratio 0.03 --lr_scheduler_type cosine ${EXTRA_ARGS:-}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/sft_registry.sh"
