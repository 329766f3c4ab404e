#!/usr/bin/env bash
# NEO-2B stage 1 (PT): train the pre-buffer, the H/W channels and the patch embedding on
# image-text pairs; upstream 2B_1PT (ZeRO-2, lr 8e-4, cosine to 0.1x, 1000 warmup steps,
# 200k steps, 64 samples per row x 5, rows of 16384 tokens, 64..4096 tokens per image).
#
#   python data_tools/build_neo.py --llm Qwen3-1.7B-Base --extra-layers 12 --out neo-2b-init
#   SVP_DATASET_REGISTRY=data/datasets.yaml DATASETS="captions" MODEL=neo-2b-init \
#   NPROC_PER_NODE=8 bash recipes/neo_2b_pt.sh
set -euo pipefail
STAGE=pt
LR=${LR:-8e-4}; SCHEDULER=${SCHEDULER:-cosine_with_min_lr}; MIN_LR_RATIO=${MIN_LR_RATIO:-0.1}
WARMUP_STEPS=${WARMUP_STEPS-1000}; MAX_STEPS=${MAX_STEPS:-200000}
BATCH=${BATCH:-64}; GRAD_ACC=${GRAD_ACC:-5}
MAX_LENGTH=${MAX_LENGTH:-16384}; ROW_LENGTH=${ROW_LENGTH:-16384}
MIN_PIXELS=${MIN_PIXELS:-65536}; MAX_PIXELS=${MAX_PIXELS:-4194304}
DEEPSPEED=${DEEPSPEED-zero2}; PLAN_RECIPE=${PLAN_RECIPE:-neo_2b_pt}; EXTRA_LAYERS=${EXTRA_LAYERS:-12}
# shellcheck source=recipes/neo_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/neo_common.sh"
neo_stage
