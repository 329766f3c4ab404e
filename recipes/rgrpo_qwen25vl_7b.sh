#!/usr/bin/env bash
# Regional GRPO of a crop-SFT Qwen2.5-VL-7B with VLM-R3's RL settings (lr 1e-6 constant,
# batch 1 x grad-acc 8 per GPU, temperature 1.0, no KL, LLM only; 8 generations instead of
# VLM-R3's 5, which only divide the generation batch on 5 GPUs); knobs: recipes/rgrpo.sh.
#
#   MODEL=output/crop_sft_merged DATA=data/rgrpo.jsonl NPROC_PER_NODE=4 USE_VLLM=colocate \
#   bash recipes/rgrpo_qwen25vl_7b.sh
set -euo pipefail
export MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl} NUM_GENERATIONS=${NUM_GENERATIONS:-8}
export LR=${LR:-1e-6} BATCH=${BATCH:-1} GRAD_ACC=${GRAD_ACC:-8} TEMPERATURE=${TEMPERATURE:-1.0}
export BETA=${BETA:-0.0} MAX_COMPLETION_LENGTH=${MAX_COMPLETION_LENGTH:-2048}
export EXTRA_ARGS="${EXTRA_ARGS:-} --lr_scheduler_type constant --warmup_ratio 0"
exec bash "$(dirname "${BASH_SOURCE[0]}")/rgrpo.sh"
