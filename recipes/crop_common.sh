# Sourced by the crop-tool recipes (sft_crop.sh, rgrpo.sh): the knobs both share and the
# fail-fast checks, so SFT and R-GRPO agree on image sizes and refuse the same mistakes.
# The crop sizes (SVP_CROP_MAIN_SHORT, SVP_CROP_MAX_SHORT) are settings of the crop tool:
# defaults in svp/croptool/settings.py, passed on from the environment as the user set them.
# shellcheck source=recipes/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MAX_PIXELS=${MAX_PIXELS:-1003520}
DTYPE=${DTYPE:-bfloat16}
DEEPSPEED=${DEEPSPEED:-}             # zero2 | zero3 | empty
NUM_WORKERS=${NUM_WORKERS:-4}
GRAD_CKPT=${GRAD_CKPT:-true}
EXTRA_ARGS=${EXTRA_ARGS:-}

crop_checks() {  # crop_checks: DATA files exist, a local MODEL exists, TEMPLATE is a crop one
  local f
  for f in $DATA; do
    [[ -f "$f" ]] || { echo "error: data file not found: $f (set DATA)" >&2; exit 2; }
  done
  svp_check_model MODEL "$MODEL"
  case "$TEMPLATE" in qwen2_5_vl_crop|qwen3_vl_crop) ;; *)
    echo "error: TEMPLATE=$TEMPLATE; the crop tool needs qwen2_5_vl_crop or qwen3_vl_crop" >&2
    exit 2;; esac
  svp_check_settings croptool
  svp_launch
}

crop_run() {  # crop_run CMD...: print, and run unless DRY_RUN=1
  export MAX_PIXELS
  svp_show "MAX_PIXELS=$MAX_PIXELS" "$@"
  [[ "${DRY_RUN:-0}" == 1 ]] && exit 0
  exec "$@"
}
