#!/usr/bin/env bash
# NEO-2B stage 2 (mid-training): every parameter trains; upstream 2B_2MTsi (ZeRO-3, lr 5e-5,
# cosine to 0.2x, 3% warmup, 50k steps, 64 samples per row x 2, rows of 32768 tokens,
# up to 16384 tokens per image). MODEL = the PT stage's checkpoint.
set -euo pipefail
STAGE=mt
LR=${LR:-5e-5}; SCHEDULER=${SCHEDULER:-cosine_with_min_lr}; MIN_LR_RATIO=${MIN_LR_RATIO:-0.2}
WARMUP_RATIO=${WARMUP_RATIO:-0.03}; MAX_STEPS=${MAX_STEPS:-50000}
BATCH=${BATCH:-64}; GRAD_ACC=${GRAD_ACC:-2}
MAX_LENGTH=${MAX_LENGTH:-32768}; ROW_LENGTH=${ROW_LENGTH:-32768}
MIN_PIXELS=${MIN_PIXELS:-65536}; MAX_PIXELS=${MAX_PIXELS:-16777216}
DEEPSPEED=${DEEPSPEED-zero3}; PLAN_RECIPE=${PLAN_RECIPE:-neo_2b_mt}; EXTRA_LAYERS=${EXTRA_LAYERS:-12}
# shellcheck source=recipes/neo_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/neo_common.sh"
neo_stage
