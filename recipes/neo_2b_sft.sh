#!/usr/bin/env bash
# NEO-2B stage 3 (SFT): every parameter trains; upstream 2B_3SFTsi (ZeRO-3, lr 6e-5, cosine
# to 0.1x, 3% warmup, 4500 steps, 64 samples per row x 1, rows of 34816 tokens, up to 16384
# tokens per image, 1000-step saves). MODEL = the MT stage's checkpoint. TUNER=lora works too.
set -euo pipefail
STAGE=sft
LR=${LR:-6e-5}; SCHEDULER=${SCHEDULER:-cosine_with_min_lr}; MIN_LR_RATIO=${MIN_LR_RATIO:-0.1}
WARMUP_RATIO=${WARMUP_RATIO:-0.03}; MAX_STEPS=${MAX_STEPS:-4500}
BATCH=${BATCH:-64}; GRAD_ACC=${GRAD_ACC:-1}
MAX_LENGTH=${MAX_LENGTH:-34816}; ROW_LENGTH=${ROW_LENGTH:-34816}
MIN_PIXELS=${MIN_PIXELS:-65536}; MAX_PIXELS=${MAX_PIXELS:-16777216}
SAVE_STEPS=${SAVE_STEPS:-1000}; NUM_WORKERS=${NUM_WORKERS:-2}
DEEPSPEED=${DEEPSPEED-zero3}; PLAN_RECIPE=${PLAN_RECIPE:-neo_2b_sft}; EXTRA_LAYERS=${EXTRA_LAYERS:-12}
# shellcheck source=recipes/neo_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/neo_common.sh"
neo_stage
