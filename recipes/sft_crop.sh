#!/usr/bin/env bash
# Crop-tool SFT (stage 1 of VLM-R3-style training) with the crop template: the crop for every
# <tool_call>[x1, y1, x2, y2]</tool_call> is cut on the fly and inserted right after it.
# Data: the JSONL written by data_tools/convert_vlmr3.py (boxes in the model's space).
# data_tools/configure_training.py prints the knobs for a dataset size and a GPU.
#
#   DATA=data/crop_sft.jsonl MODEL=Qwen/Qwen2.5-VL-7B-Instruct MODEL_TYPE=qwen2_5_vl \
#   NPROC_PER_NODE=4 DEEPSPEED=zero2 bash recipes/sft_crop.sh
#
# Every knob is an environment variable; EXTRA_ARGS is appended verbatim; DRY_RUN=1 prints
# the command only. SVP_CROP_MAIN_SHORT / SVP_CROP_MAX_SHORT (svp/croptool/settings.py) must
# equal the values used by convert_vlmr3.py and, later, by rollouts and inference.
# RESUME=1 continues from the newest complete checkpoint in OUTPUT_DIR (RESUME=PATH: that one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=recipes/crop_common.sh
source "$ROOT/recipes/crop_common.sh"
: "${MODEL:?set MODEL (or use recipes/sft_crop_qwen25vl_7b.sh / sft_crop_qwen3vl_8b.sh)}"
MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl}
TEMPLATE=${TEMPLATE:-${MODEL_TYPE}_crop}
DATA=${DATA:?set DATA to the JSONL file(s) from data_tools/convert_vlmr3.py}
OUTPUT_DIR=${OUTPUT_DIR:-output/crop_sft_$(basename "$MODEL")}
TUNER=${TUNER:-lora}                 # lora | full
LORA_RANK=${LORA_RANK:-64}
LORA_ALPHA=${LORA_ALPHA:-128}
LORA_DROPOUT=${LORA_DROPOUT:-0.1}
LR=${LR:-2e-5}
EPOCHS=${EPOCHS:-3}
MAX_STEPS=${MAX_STEPS:--1}
BATCH=${BATCH:-4}
GRAD_ACC=${GRAD_ACC:-4}
WARMUP=${WARMUP:-0.1}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.01}
MAX_LENGTH=${MAX_LENGTH:-4096}
SAVE_STEPS=${SAVE_STEPS:-500}

crop_checks

# shellcheck disable=SC2206
cmd=(swift sft
  --model "$MODEL" --model_type "$MODEL_TYPE" --template "$TEMPLATE"
  --external_plugins "$ROOT/plugins/croptool.py"
  --dataset $DATA
  --tuner_type "$TUNER" --torch_dtype "$DTYPE"
  --learning_rate "$LR" --num_train_epochs "$EPOCHS" --max_steps "$MAX_STEPS"
  --per_device_train_batch_size "$BATCH" --gradient_accumulation_steps "$GRAD_ACC"
  --warmup_ratio "$WARMUP" --weight_decay "$WEIGHT_DECAY"
  --max_length "$MAX_LENGTH" --freeze_vit true --freeze_aligner true
  --gradient_checkpointing "$GRAD_CKPT"
  --save_steps "$SAVE_STEPS" --logging_steps 5 --report_to tensorboard
  --dataloader_num_workers "$NUM_WORKERS" --output_dir "$OUTPUT_DIR")
if [[ "$TUNER" == lora ]]; then
  cmd+=(--lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA" --lora_dropout "$LORA_DROPOUT"
        --target_modules all-linear)
fi
[[ -n "$DEEPSPEED" ]] && cmd+=(--deepspeed "$DEEPSPEED")
svp_resume "$OUTPUT_DIR"
cmd+=("${DEVICE_ARGS[@]}" "${RESUME_ARGS[@]}")
# shellcheck disable=SC2206
[[ -n "$EXTRA_ARGS" ]] && cmd+=($EXTRA_ARGS)

svp_plan_memory --model "$MODEL" --tuner "$TUNER" --lora-rank "$LORA_RANK" \
  --batch "$BATCH" --seq "$MAX_LENGTH" --grad-ckpt "$GRAD_CKPT"
crop_run "${cmd[@]}"
