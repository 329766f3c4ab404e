#!/usr/bin/env bash
# Crop-tool SFT of Qwen3-VL-8B (boxes in 0..1000; convert with --family qwen3_vl);
# knobs: recipes/sft_crop.sh.
#
#   DATA=data/crop_sft_qwen3.jsonl NPROC_PER_NODE=4 bash recipes/sft_crop_qwen3vl_8b.sh
set -euo pipefail
export MODEL=${MODEL:-Qwen/Qwen3-VL-8B-Instruct} MODEL_TYPE=${MODEL_TYPE:-qwen3_vl}
exec bash "$(dirname "${BASH_SOURCE[0]}")/sft_crop.sh"
