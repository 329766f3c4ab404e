#!/usr/bin/env bash
# The whole VLM-R3-style chain on Qwen2.5-VL-7B: crop-tool SFT -> merge LoRA -> Regional GRPO.
#
#   SFT_DATA=data/crop_sft.jsonl RL_DATA=data/rgrpo.jsonl NPROC_PER_NODE=4 \
#   bash recipes/vlmr3_qwen25vl_7b.sh
#
# Stages run in order (STAGES="sft merge grpo" picks some); a stage whose output exists is
# skipped, so a rerun after a failure resumes at the failed stage (FORCE=1 reruns them all).
# Outputs under WORK_DIR: sft/ (recipes/sft_crop_qwen25vl_7b.sh), sft_merged/ (swift export
# --merge_lora; with SFT_TUNER=full the SFT checkpoint is used as it is), rgrpo/
# (recipes/rgrpo_qwen25vl_7b.sh: VLM-R3's RL settings, the same as that recipe run alone).
# Stage knobs: SFT_<KNOB> goes to the SFT recipe and RL_<KNOB> to the R-GRPO recipe as
# <KNOB> (e.g. SFT_LR=2e-5 SFT_EPOCHS=3 RL_LR=1e-6 RL_NUM_GENERATIONS=8 RL_USE_VLLM=colocate);
# shared: MODEL_TYPE, MAX_PIXELS, SVP_CROP_MAIN_SHORT, SVP_CROP_MAX_SHORT, DEEPSPEED,
# NPROC_PER_NODE. DRY_RUN=1 prints the three commands.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=recipes/common.sh
source "$HERE/common.sh"
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}
export MODEL_TYPE=${MODEL_TYPE:-qwen2_5_vl}
SFT_DATA=${SFT_DATA:?set SFT_DATA (data_tools/convert_vlmr3.py output)}
RL_DATA=${RL_DATA:?set RL_DATA (data_tools/convert_rl.py output)}
WORK_DIR=${WORK_DIR:-output/vlmr3_$(basename "$BASE_MODEL")}
STAGES=${STAGES:-sft merge grpo}
SFT_TUNER=${SFT_TUNER:-lora}
DRY=${DRY_RUN:-0}
KNOBS=(LR EPOCHS MAX_STEPS BATCH GRAD_ACC WARMUP LORA_RANK LORA_ALPHA MAX_LENGTH SAVE_STEPS
       NUM_WORKERS GRAD_CKPT DTYPE TUNER EXTRA_ARGS NUM_GENERATIONS MAX_TURNS TEMPERATURE BETA
       MAX_COMPLETION_LENGTH REWARDS REWARD_WEIGHTS SCALE_REWARDS USE_VLLM VLLM_GPU_MEMORY
       VLLM_HOST VLLM_PORT)

stage_env() {  # stage_env SFT|RL -> "KNOB=value" words for every <PREFIX>_<KNOB> that is set
  local prefix=$1 k v
  for k in "${KNOBS[@]}"; do
    v="${prefix}_${k}"
    [[ -n "${!v+x}" ]] && printf '%s\0' "$k=${!v}"
  done
  return 0
}
unset_knobs=()
for k in "${KNOBS[@]}"; do unset_knobs+=(-u "$k"); done
wants() { [[ " $STAGES " == *" $1 "* ]]; }
done_or_forced() { [[ "${FORCE:-0}" != 1 && -e "$1" ]]; }

SFT_OUT="$WORK_DIR/sft"
MERGED="$WORK_DIR/sft_merged"
if wants sft; then
  if done_or_forced "$SFT_OUT/.done"; then
    echo "[vlmr3] sft: $SFT_OUT/.done exists, skipped"
  else
    mapfile -d '' senv < <(stage_env SFT)
    echo "[vlmr3] stage sft"
    env "${unset_knobs[@]}" TUNER="$SFT_TUNER" "${senv[@]}" MODEL="$BASE_MODEL" \
        DATA="$SFT_DATA" OUTPUT_DIR="$SFT_OUT" DRY_RUN="$DRY" bash "$HERE/sft_crop_qwen25vl_7b.sh"
    [[ "$DRY" == 1 ]] || touch "$SFT_OUT/.done"
  fi
fi
CKPT=$(newest_checkpoint "$SFT_OUT")
[[ "$DRY" == 1 && -z "$CKPT" ]] && CKPT="$SFT_OUT/vN-DATE/checkpoint-N"
if wants merge; then
  if done_or_forced "$MERGED/.done"; then
    echo "[vlmr3] merge: $MERGED/.done exists, skipped"
  else
    [[ -n "$CKPT" ]] || { echo "error: no checkpoint under $SFT_OUT (run the sft stage)" >&2; exit 2; }
    echo "[vlmr3] stage merge"
    if [[ "$SFT_TUNER" == lora ]]; then
      merge=(swift export --adapters "$CKPT" --merge_lora true --output_dir "$MERGED")
      svp_show "${merge[@]}"
      if [[ "$DRY" != 1 ]]; then
        rm -rf "$MERGED"
        "${merge[@]}"
        touch "$MERGED/.done"
      fi
    else  # full tuning: the checkpoint is the model
      echo "ln -sfn $CKPT $MERGED"
      if [[ "$DRY" != 1 ]]; then
        ln -sfn "$(cd "$CKPT" && pwd)" "$MERGED"
        touch "$MERGED/.done"
      fi
    fi
  fi
fi
if wants grpo; then
  mapfile -d '' renv < <(stage_env RL)
  echo "[vlmr3] stage grpo"
  exec env "${unset_knobs[@]}" "${renv[@]}" MODEL="$(cd "$MERGED" 2>/dev/null && pwd || echo "$MERGED")" \
      DATA="$RL_DATA" OUTPUT_DIR="$WORK_DIR/rgrpo" DRY_RUN="$DRY" bash "$HERE/rgrpo_qwen25vl_7b.sh"
fi
