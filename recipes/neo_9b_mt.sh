#!/usr/bin/env bash
# NEO-9B stage 2 (mid-training): as neo_2b_mt.sh with upstream 8B_2MTsi's changes
# (200 warmup steps, rows of 18432 tokens).
set -euo pipefail
export PLAN_RECIPE=${PLAN_RECIPE:-neo_9b_mt} EXTRA_LAYERS=${EXTRA_LAYERS:-6}
export WARMUP_STEPS=${WARMUP_STEPS:-200}
export MAX_LENGTH=${MAX_LENGTH:-18432} ROW_LENGTH=${ROW_LENGTH:-18432}
exec bash "$(dirname "${BASH_SOURCE[0]}")/neo_2b_mt.sh"
