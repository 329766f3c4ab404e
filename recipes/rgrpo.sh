#!/usr/bin/env bash
# Regional GRPO (stage 2 of VLM-R3-style training): rollouts that execute crop-tool calls
# (the crop_tool scheduler, same one-turn format as the crop SFT data), six rewards logged one
# by one (README "Regional GRPO" has each formula, range and default weight).
# MODEL is the crop-SFT model (LoRA merged: recipes/vlmr3_qwen25vl_7b.sh does the whole
# chain); DATA is the JSONL written by data_tools/convert_rl.py.
#
#   MODEL=output/crop_sft_merged DATA=data/rgrpo.jsonl NPROC_PER_NODE=4 bash recipes/rgrpo.sh
#
# Rollout engine (USE_VLLM): false = the trainer's own model through ms-swift's transformers
# engine (works anywhere, slow); colocate = vLLM inside the trainer processes; server = a
# separate `swift rollout` (the command to start it is printed; run it first on its own GPUs).
# Every knob is an environment variable; EXTRA_ARGS is appended verbatim; DRY_RUN=1 prints
# the command only. MAX_PIXELS and SVP_CROP_* must equal the SFT run's values.
# RESUME=1 continues from the newest complete checkpoint in OUTPUT_DIR (RESUME=PATH: that one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A full 7B policy with its AdamW states and rollouts does not fit plain DDP on 80 GB (see the
# memory plan printed below): ZeRO-3 by default; DEEPSPEED= (empty) asks for DDP.
DEEPSPEED=${DEEPSPEED-zero3}
# shellcheck source=recipes/crop_common.sh
source "$ROOT/recipes/crop_common.sh"
: "${MODEL:?set MODEL to the crop-SFT model (merged)}"
MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl}
TEMPLATE=${TEMPLATE:-${MODEL_TYPE}_crop}
DATA=${DATA:?set DATA to the JSONL file(s) from data_tools/convert_rl.py}
OUTPUT_DIR=${OUTPUT_DIR:-output/rgrpo_$(basename "$MODEL")}
TUNER=${TUNER:-full}                 # full (as VLM-R3) | lora
LORA_RANK=${LORA_RANK:-64}
LORA_ALPHA=${LORA_ALPHA:-128}
# default rewards and weights: a table of svp/croptool/rewards.py, REWARD_SET=ours (REWARDS,
# all six) or vlmr3 (VLM-R3's own four: accuracy, its format and region rewards, segment
# length, weights 1)
REWARD_SET=${REWARD_SET:-ours}
if [[ -z "${REWARDS:-}" || -z "${REWARD_WEIGHTS:-}" ]]; then
  defaults=$("$SVP_PYTHON" -m svp.croptool.rewards --set "$REWARD_SET") \
    || { echo "error: $SVP_PYTHON cannot import svp (set SVP_PYTHON)" >&2; exit 2; }
  REWARDS=${REWARDS:-$(sed -n 1p <<< "$defaults")}
  REWARD_WEIGHTS=${REWARD_WEIGHTS:-$(sed -n 2p <<< "$defaults")}
fi
SCALE_REWARDS=${SCALE_REWARDS:-group}  # group | batch | none | gdpo (each reward normalised)
LR=${LR:-1e-6}
EPOCHS=${EPOCHS:-1}
MAX_STEPS=${MAX_STEPS:--1}
BATCH=${BATCH:-2}
GRAD_ACC=${GRAD_ACC:-8}
NUM_GENERATIONS=${NUM_GENERATIONS:-8}
MAX_TURNS=${MAX_TURNS:-5}            # rounds per rollout = up to MAX_TURNS-1 crops + the answer
MAX_COMPLETION_LENGTH=${MAX_COMPLETION_LENGTH:-1024}  # per round
MAX_LENGTH=${MAX_LENGTH:-8192}
TEMPERATURE=${TEMPERATURE:-1.0}
BETA=${BETA:-0.0}                    # VLM-R3 and DeepEyes train without a KL term
USE_VLLM=${USE_VLLM:-false}          # false | colocate | server
VLLM_GPU_MEMORY=${VLLM_GPU_MEMORY:-0.5}
VLLM_HOST=${VLLM_HOST:-127.0.0.1}
VLLM_PORT=${VLLM_PORT:-8000}
SAVE_STEPS=${SAVE_STEPS:-100}

crop_checks
WORLD=$(( ${NPROC_PER_NODE:-1} * ${NNODES:-1} ))
if (( BATCH * GRAD_ACC * WORLD % NUM_GENERATIONS != 0 )); then
  echo "error: BATCH x GRAD_ACC x NPROC_PER_NODE x NNODES = $((BATCH * GRAD_ACC * WORLD)) is not" \
       "divisible by NUM_GENERATIONS=$NUM_GENERATIONS (GRPO's generation batch)" >&2; exit 2
fi
if [[ "$DEEPSPEED" == zero3 && "$USE_VLLM" == false && "$EXTRA_ARGS" == *"--ds3_gather_for_generation false"* ]]; then
  echo "error: ZeRO-3 rollouts through the trainer's model need --ds3_gather_for_generation true:" \
       "crop-tool rounds differ between ranks, and partitioned generation would wait for the" \
       "others at every token (see svp/croptool/swift_template.py)" >&2; exit 2
fi
read -r -a rewards <<< "$REWARDS"
read -r -a weights <<< "$REWARD_WEIGHTS"
if [[ ${#rewards[@]} -ne ${#weights[@]} ]]; then
  echo "error: ${#rewards[@]} REWARDS but ${#weights[@]} REWARD_WEIGHTS" >&2; exit 2
fi

cmd=(swift rlhf --rlhf_type grpo
  --model "$MODEL" --model_type "$MODEL_TYPE" --template "$TEMPLATE"
  --external_plugins "$ROOT/plugins/rgrpo.py"
  --dataset $DATA
  --tuner_type "$TUNER" --torch_dtype "$DTYPE"
  --reward_funcs "${rewards[@]}" --reward_weights "${weights[@]}"
  --scale_rewards "$SCALE_REWARDS"
  --multi_turn_scheduler crop_tool --max_turns "$MAX_TURNS"
  --num_generations "$NUM_GENERATIONS" --temperature "$TEMPERATURE" --beta "$BETA"
  --max_completion_length "$MAX_COMPLETION_LENGTH" --max_length "$MAX_LENGTH"
  --learning_rate "$LR" --num_train_epochs "$EPOCHS" --max_steps "$MAX_STEPS"
  --per_device_train_batch_size "$BATCH" --gradient_accumulation_steps "$GRAD_ACC"
  --freeze_vit true --freeze_aligner true --gradient_checkpointing "$GRAD_CKPT"
  --log_completions true --save_steps "$SAVE_STEPS" --logging_steps 1
  --report_to tensorboard --dataloader_num_workers "$NUM_WORKERS" --output_dir "$OUTPUT_DIR")
if [[ "$TUNER" == lora ]]; then
  cmd+=(--lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA" --target_modules all-linear)
fi
case "$USE_VLLM" in
  false) cmd+=(--use_vllm false) ;;
  colocate) cmd+=(--use_vllm true --vllm_mode colocate
                  --vllm_gpu_memory_utilization "$VLLM_GPU_MEMORY"
                  --vllm_limit_mm_per_prompt "{\"image\": $MAX_TURNS}"
                  --vllm_max_model_len "$MAX_LENGTH" --sleep_level 1) ;;
  server) cmd+=(--use_vllm true --vllm_mode server --vllm_server_host "$VLLM_HOST"
                --vllm_server_port "$VLLM_PORT" --vllm_server_pass_dataset true)
          echo "rollout server (start first, on its own GPUs, same env incl. SVP_CROP_*):" \
               "$(svp_show "MAX_PIXELS=$MAX_PIXELS" swift rollout --model "$MODEL" \
                  --model_type "$MODEL_TYPE" --template "$TEMPLATE" \
                  --external_plugins "$ROOT/plugins/rgrpo.py" --multi_turn_scheduler crop_tool \
                  --max_turns "$MAX_TURNS" --vllm_use_async_engine true \
                  --vllm_limit_mm_per_prompt "{\"image\": $MAX_TURNS}" --port "$VLLM_PORT")" ;;
  *) echo "error: USE_VLLM=$USE_VLLM (false | colocate | server)" >&2; exit 2 ;;
esac
[[ -n "$DEEPSPEED" ]] && cmd+=(--deepspeed "$DEEPSPEED")
svp_resume "$OUTPUT_DIR"
cmd+=("${DEVICE_ARGS[@]}" "${RESUME_ARGS[@]}")
# shellcheck disable=SC2206
[[ -n "$EXTRA_ARGS" ]] && cmd+=($EXTRA_ARGS)

rollout_batch=0 vllm_fraction=0
[[ "$USE_VLLM" == false ]] && rollout_batch=$BATCH
[[ "$USE_VLLM" == colocate ]] && vllm_fraction=$VLLM_GPU_MEMORY
svp_plan_memory --model "$MODEL" --tuner "$TUNER" --lora-rank "$LORA_RANK" --batch "$BATCH" \
  --seq "$MAX_LENGTH" --grad-ckpt "$GRAD_CKPT" --rollout-batch "$rollout_batch" \
  --vllm-fraction "$vllm_fraction"
crop_run "${cmd[@]}"
