#!/usr/bin/env bash
# CoVT on Qwen2.5-VL-7B: the four curricula (understanding -> generation -> reasoning ->
# efficient reasoning) from ordinary LLaVA data, one LoRA run per entry of RUNS with a LoRA
# merge after each, so every run starts from the previous one's merged model.
#
#   DATA=data/llava.jsonl SVP_COVT_EXPERTS=sam,depth,dino \
#   SVP_COVT_SAM_CKPT=ckpt/sam_vit_h_4b8939.pth SVP_COVT_DEPTH_CKPT=ckpt/depth-anything-v2-large \
#   SVP_COVT_DINO_CKPT=ckpt/dinov2-large SVP_COVT_CACHE=covt_cache NPROC_PER_NODE=4 \
#   bash recipes/covt_qwen25vl_7b.sh
#
# RUNS: space-separated SCHEDULE:STEPS[:AUX_UNTIL]. SCHEDULE is a stage or a step schedule
# (stage@step,...), as SVP_COVT_SCHEDULE takes; AUX_UNTIL is the step after which that run
# trains the LM loss only. Default: upstream's released scripts (finetune.sh + run.sh): 6000
# steps of understanding, merge, then 10000 steps of generation -> reasoning (from 3000) ->
# efficient (from 6000) with the expert losses off from step 8000, merge:
#   RUNS="understanding:6000 generation@0,reasoning@3000,efficient@6000:10000:8000"
# Four runs with a merge after each stage (what this recipe did before):
#   RUNS="understanding:4000 generation:3000 reasoning:3000 efficient:5000"
# A run whose .done marker exists is skipped; an interrupted run resumes from its newest
# checkpoint and continues its stage schedule (the stage follows the global step). FORCE=1
# reruns everything; DRY_RUN=1 prints the commands. Knobs: LR, BATCH, GRAD_ACC, LORA_RANK,
# LORA_ALPHA, LORA_DROPOUT, MAX_PIXELS, MAX_LENGTH, SAVE_STEPS, NUM_WORKERS, GRAD_CKPT, DTYPE,
# DEEPSPEED, TRAIN_NEW_ROWS, EXTRA_ARGS.
# TRAIN_NEW_ROWS: 1 (default, upstream) trains only the embedding and LM-head rows of the new
# tokens (--tuner_type lora_new_rows; a checkpoint holds those rows, not the matrices); all:
# the whole embed_tokens / lm_head as --modules_to_save (every old row drifts too, 2 x vocab x
# hidden more to train and save); 0: the new rows stay as initialised.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
# shellcheck source=recipes/common.sh
source "$HERE/common.sh"
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}
DATA=${DATA:?set DATA (LLaVA conversations JSON/JSONL with images)}
WORK_DIR=${WORK_DIR:-output/covt_$(basename "$BASE_MODEL")}
RUNS=${RUNS:-"understanding:6000 generation@0,reasoning@3000,efficient@6000:10000:8000"}
LR=${LR:-5e-5}
BATCH=${BATCH:-1}
GRAD_ACC=${GRAD_ACC:-1}
LORA_RANK=${LORA_RANK:-16}
LORA_ALPHA=${LORA_ALPHA:-32}
LORA_DROPOUT=${LORA_DROPOUT:-0.01}
# pixel budget of a training picture, aspect kept (a 640x480 picture: 234 tokens); upstream
# squashes every picture to 448x448 (256 tokens): SVP_COVT_RESIZE=448 with this budget
MAX_PIXELS=${MAX_PIXELS:-200704}
MAX_LENGTH=${MAX_LENGTH:-4096}
SAVE_STEPS=${SAVE_STEPS:-500}
NUM_WORKERS=${NUM_WORKERS:-4}
GRAD_CKPT=${GRAD_CKPT:-true}
DTYPE=${DTYPE:-bfloat16}
TRAIN_NEW_ROWS=${TRAIN_NEW_ROWS:-1}
# FRAME: qwen (Qwen2.5-VL's own chat template, the one a served model answers in) or upstream
# (CoVT's data.py frame: a newline before every <|im_end|>, trained that way upstream and then
# served with the standard template)
FRAME=${FRAME:-qwen}
EXTRA_ARGS=${EXTRA_ARGS:-}
DRY=${DRY_RUN:-0}
PLUGIN="$REPO/plugins/covt.py"

[[ "$DRY" == 1 || -e "$DATA" ]] || { echo "covt: DATA=$DATA not found" >&2; exit 2; }
svp_check_model BASE_MODEL "$BASE_MODEL"
# experts, backend, weights parse; the real experts' checkpoints exist (svp/covt/settings.py)
svp_check_settings covt
svp_launch
case "$FRAME" in
  qwen) template=qwen2_5_vl_covt ;;
  upstream) template=qwen2_5_vl_covt_upstream ;;
  *) echo "covt: FRAME=$FRAME is not qwen or upstream" >&2; exit 2 ;;
esac
save_modules=(covt_heads)
tuner=lora
case "$TRAIN_NEW_ROWS" in
  1) tuner=lora_new_rows ;;
  all) save_modules+=(embed_tokens lm_head) ;;
  0) ;;
  *) echo "covt: TRAIN_NEW_ROWS=$TRAIN_NEW_ROWS (1, all or 0)" >&2; exit 2 ;;
esac
ds_args=()
[[ -n "${DEEPSPEED:-}" ]] && ds_args=(--deepspeed "$DEEPSPEED")
run() {
  echo "+ $(svp_show "$@")"
  [[ "$DRY" == 1 ]] || "$@"
}

svp_plan_memory --model "$BASE_MODEL" --tuner lora --lora-rank "$LORA_RANK" \
  --modules-to-save "${save_modules[*]}" --batch "$BATCH" --seq "$MAX_LENGTH" \
  --grad-ckpt "$GRAD_CKPT"
model="$BASE_MODEL"
i=0
for entry in $RUNS; do
  i=$((i + 1))
  IFS=: read -r schedule steps aux <<< "$entry"
  [[ "$steps" =~ ^[0-9]+$ ]] || { echo "covt: bad RUNS entry '$entry' (SCHEDULE:STEPS[:AUX_UNTIL])" >&2; exit 2; }
  [[ -z "$aux" || "$aux" =~ ^[0-9]+$ ]] || { echo "covt: bad AUX_UNTIL in '$entry'" >&2; exit 2; }
  name="run${i}_${schedule%%@*}"
  out="$WORK_DIR/$name"
  merged="$WORK_DIR/${name}_merged"
  if [[ "${FORCE:-0}" != 1 && -e "$merged/.done" ]]; then
    echo "[covt] $name: done, skipped"
    model="$merged"
    continue
  fi
  resume=()
  ckpt=$(newest_checkpoint "$out")
  if [[ "${FORCE:-0}" != 1 && -e "$out/.done" ]]; then
    echo "[covt] $name: trained, merging $ckpt"
  else
    [[ -n "$ckpt" && "${FORCE:-0}" != 1 ]] && resume=(--resume_from_checkpoint "$ckpt") \
      && echo "[covt] $name: resuming from $ckpt"
    echo "[covt] $name: schedule $schedule, $steps steps${aux:+, expert losses until step $aux}"
    run env SVP_COVT_SCHEDULE="$schedule" SVP_COVT_AUX_UNTIL="${aux:-}" \
      swift sft --external_plugins "$PLUGIN" --model "$model" \
      --model_type covt_qwen2_5_vl --template "$template" --callbacks covt_stage \
      --dataset "$DATA" --max_steps "$steps" --tuner_type "$tuner" --target_modules all-linear \
      --lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA" --lora_dropout "$LORA_DROPOUT" \
      --modules_to_save "${save_modules[@]}" --freeze_vit true \
      --learning_rate "$LR" --optimizer covt --weight_decay 0.1 --warmup_ratio 0.05 \
      --lr_scheduler_type cosine --per_device_train_batch_size "$BATCH" \
      --gradient_accumulation_steps "$GRAD_ACC" --max_pixels "$MAX_PIXELS" \
      --max_length "$MAX_LENGTH" --truncation_strategy delete --torch_dtype "$DTYPE" \
      --gradient_checkpointing "$GRAD_CKPT" --dataloader_num_workers "$NUM_WORKERS" \
      --save_steps "$SAVE_STEPS" --logging_steps 5 --report_to tensorboard \
      --output_dir "$out" "${resume[@]}" "${ds_args[@]}" "${DEVICE_ARGS[@]}" $EXTRA_ARGS
    [[ "$DRY" == 1 ]] || touch "$out/.done"
    ckpt=$(newest_checkpoint "$out")
  fi
  [[ "$DRY" == 1 && -z "$ckpt" ]] && ckpt="$out/vN-DATE/checkpoint-$steps"
  [[ "$DRY" == 1 ]] || rm -rf "$merged"  # a partial merge from an interrupted run
  run swift export --external_plugins "$PLUGIN" --adapters "$ckpt" --merge_lora true \
    --model_type covt_qwen2_5_vl --output_dir "$merged"
  [[ "$DRY" == 1 ]] || touch "$merged/.done"
  model="$merged"
done
echo "[covt] final model: $model"
