#!/usr/bin/env bash
# Crop-tool SFT of Qwen2.5-VL-7B (boxes in resized-image pixels); knobs: recipes/sft_crop.sh.
#
#   DATA=data/crop_sft.jsonl NPROC_PER_NODE=4 bash recipes/sft_crop_qwen25vl_7b.sh
set -euo pipefail
export MODEL=${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct} MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl}
exec bash "$(dirname "${BASH_SOURCE[0]}")/sft_crop.sh"
