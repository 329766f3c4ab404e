#!/usr/bin/env bash
# NEO-9B stage 3 (SFT): as neo_2b_sft.sh with upstream 8B_3SFTsi's changes (plain cosine
# schedule, 200 warmup steps, rows of 18432 tokens).
set -euo pipefail
export PLAN_RECIPE=${PLAN_RECIPE:-neo_9b_sft} EXTRA_LAYERS=${EXTRA_LAYERS:-6}
export SCHEDULER=${SCHEDULER:-cosine} WARMUP_STEPS=${WARMUP_STEPS:-200}
export MAX_LENGTH=${MAX_LENGTH:-18432} ROW_LENGTH=${ROW_LENGTH:-18432}
exec bash "$(dirname "${BASH_SOURCE[0]}")/neo_2b_sft.sh"
