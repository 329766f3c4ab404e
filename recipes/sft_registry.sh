#!/usr/bin/env bash
# SFT of a Qwen2.5-VL / Qwen3-VL model on registry datasets (name%X sampling, validated rows).
#
#   SVP_DATASET_REGISTRY=data/datasets.yaml DATASETS="gres%50 llava_mix%200" \
#   MODEL=Qwen/Qwen2.5-VL-7B-Instruct bash recipes/sft_registry.sh
#
# Every knob is an environment variable (defaults below); EXTRA_ARGS is appended verbatim.
# DRY_RUN=1 prints the command without running it. Multi-GPU / multi-node go through
# ms-swift's own launcher: NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT.
# RESUME=1 continues from the newest complete checkpoint in OUTPUT_DIR (RESUME=PATH: that one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=recipes/common.sh
source "$ROOT/recipes/common.sh"

MODEL=${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}
MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl}
TEMPLATE=${TEMPLATE:-$MODEL_TYPE}
DATASETS=${DATASETS:?set DATASETS, e.g. DATASETS="gres%50 llava_mix%200"}
OUTPUT_DIR=${OUTPUT_DIR:-output/sft_registry}
TUNER=${TUNER:-lora}                 # lora | full | lora_new_rows (LoRA + only the rows of
                                     # the tokens a plugin adds, e.g. PLUGINS=masktok)
LORA_RANK=${LORA_RANK:-64}
LORA_ALPHA=${LORA_ALPHA:-128}
LORA_DROPOUT=${LORA_DROPOUT:-0.05}
LR=${LR:-1e-4}
EPOCHS=${EPOCHS:-1}
MAX_STEPS=${MAX_STEPS:--1}
BATCH=${BATCH:-1}
GRAD_ACC=${GRAD_ACC:-16}
MAX_LENGTH=${MAX_LENGTH:-4096}
MAX_PIXELS=${MAX_PIXELS:-1003520}
SAVE_STEPS=${SAVE_STEPS:-500}
DTYPE=${DTYPE:-bfloat16}
DEEPSPEED=${DEEPSPEED:-}             # zero2 | zero3 | empty
NUM_WORKERS=${NUM_WORKERS:-4}
PLUGINS=${PLUGINS:-}                 # more plugin entries, e.g. "masktok" (plugins/masktok.py)
MODULES_TO_SAVE=${MODULES_TO_SAVE:-} # e.g. "embed_tokens lm_head" when new tokens are trained
LOSS_SCALE=${LOSS_SCALE:-default}    # e.g. default+mask_span
EXTRA_ARGS=${EXTRA_ARGS:-}

svp_check_model MODEL "$MODEL"

plugin_files=("$ROOT/plugins/dataset_registry.py")
capabilities=(dataset_registry)
for p in $PLUGINS; do
  f="$ROOT/plugins/${p%.py}.py"
  [[ -f "$f" ]] || { echo "error: no plugin entry $f (PLUGINS=$PLUGINS)" >&2; exit 2; }
  plugin_files+=("$f")
  capabilities+=("${p%.py}")
done
# registry files exist, every SVP_* value of these capabilities parses (printed as in force)
svp_check_settings "${capabilities[@]}"
svp_launch

cmd=(swift sft
  --model "$MODEL" --model_type "$MODEL_TYPE" --template "$TEMPLATE"
  --external_plugins "${plugin_files[@]}" --loss_scale "$LOSS_SCALE"
  --dataset $DATASETS
  --tuner_type "$TUNER" --torch_dtype "$DTYPE"
  --learning_rate "$LR" --num_train_epochs "$EPOCHS" --max_steps "$MAX_STEPS"
  --per_device_train_batch_size "$BATCH" --gradient_accumulation_steps "$GRAD_ACC"
  --max_length "$MAX_LENGTH" --freeze_vit true --freeze_aligner true
  --save_steps "$SAVE_STEPS" --logging_steps 5 --report_to tensorboard
  --dataloader_num_workers "$NUM_WORKERS" --output_dir "$OUTPUT_DIR")
if [[ "$TUNER" == lora || "$TUNER" == lora_new_rows ]]; then
  cmd+=(--lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA" --lora_dropout "$LORA_DROPOUT"
        --target_modules all-linear)
fi
# shellcheck disable=SC2206
[[ -n "$MODULES_TO_SAVE" ]] && cmd+=(--modules_to_save $MODULES_TO_SAVE)
[[ -n "$DEEPSPEED" ]] && cmd+=(--deepspeed "$DEEPSPEED")
svp_resume "$OUTPUT_DIR"
cmd+=("${DEVICE_ARGS[@]}" "${RESUME_ARGS[@]}")
# shellcheck disable=SC2206
[[ -n "$EXTRA_ARGS" ]] && cmd+=($EXTRA_ARGS)

svp_plan_memory --model "$MODEL" --tuner "${TUNER/lora_new_rows/lora}" --lora-rank "$LORA_RANK" \
  --modules-to-save "$MODULES_TO_SAVE" --batch "$BATCH" --seq "$MAX_LENGTH" --grad-ckpt true
export MAX_PIXELS
svp_show "MAX_PIXELS=$MAX_PIXELS" "${cmd[@]}"
[[ "${DRY_RUN:-0}" == 1 ]] && exit 0
exec "${cmd[@]}"
