# Sourced by the NEO stage recipes (neo_{2b,9b}_{pt,mt,sft}.sh): one `swift sft` command for
# the three stages of upstream's kit (its VLMTrainKit/scripts/*.sh). A stage file sets its
# defaults, then calls neo_stage. Every knob is an environment variable; EXTRA_ARGS is appended verbatim and
# DRY_RUN=1 prints the command without running it.
#
#   STAGE      pt: the pre-buffer, every *_hw tensor and its norms, and the patch embedding
#                  train; the LLM, embeddings and lm_head stay frozen (svp/neo/freeze.py)
#              mt | sft: every parameter trains
#   MODEL      a NEO checkpoint: data_tools/build_neo.py's output for pt, the previous
#              stage's checkpoint for mt and sft
#   DATASETS   registry names with name%X sampling (SVP_DATASET_REGISTRY) or data files
#   BATCH      samples packed into one row per device (upstream: 64); ROW_LENGTH caps the
#              row (upstream's max_seq_length; overflowing samples are left out and counted)
#   LOSS_REDUCTION  token | sample | square (upstream: square)
#   RESUME     1: continue from the newest complete checkpoint in OUTPUT_DIR; PATH: that one
# shellcheck source=recipes/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

neo_stage() {
  : "${STAGE:?}" "${MODEL:?set MODEL to a NEO checkpoint (data_tools/build_neo.py makes one)}"
  : "${DATASETS:?set DATASETS, e.g. DATASETS=\"captions%50 ocr\"}"
  OUTPUT_DIR=${OUTPUT_DIR:-output/neo_$STAGE}
  DTYPE=${DTYPE:-bfloat16}
  NUM_WORKERS=${NUM_WORKERS:-4}
  SAVE_STEPS=${SAVE_STEPS:-10000}
  LOGGING_STEPS=${LOGGING_STEPS:-10}
  WEIGHT_DECAY=${WEIGHT_DECAY:-0.01}
  GRAD_CKPT=${GRAD_CKPT:-true}
  TUNER=${TUNER:-full}               # full | lora (mt / sft only)
  LORA_RANK=${LORA_RANK:-64}
  LORA_ALPHA=${LORA_ALPHA:-128}
  LORA_DROPOUT=${LORA_DROPOUT:-0.05}
  EXTRA_ARGS=${EXTRA_ARGS:-}

  if [[ "${DRY_RUN:-0}" != 1 && ! -f "$MODEL/config.json" ]]; then
    echo "error: MODEL=$MODEL is not a checkpoint directory (no config.json); build one with" \
         "python data_tools/build_neo.py --llm QWEN3_DIR --extra-layers E --out DIR" >&2
    exit 2
  fi
  local extra=${EXTRA_LAYERS:-}       # from MODEL's config when it exists
  if [[ -f "$MODEL/config.json" ]]; then
    extra=$("$SVP_PYTHON" -c 'import json, sys; c = json.load(open(sys.argv[1]));
assert c.get("model_type") == "neo_chat", "model_type %r" % c.get("model_type")
print(c["llm_config"]["extra_num_layers"])' "$MODEL/config.json") || {
      echo "error: MODEL=$MODEL is not a NEO checkpoint (model_type neo_chat); make one with" \
           "data_tools/build_neo.py" >&2; exit 2; }
  fi
  export SVP_NEO_LOSS_REDUCTION=${LOSS_REDUCTION:-${SVP_NEO_LOSS_REDUCTION:-square}}
  export SVP_NEO_MIN_PIXELS=${MIN_PIXELS:-${SVP_NEO_MIN_PIXELS:-0}}
  export SVP_NEO_MAX_PIXELS=${MAX_PIXELS:-${SVP_NEO_MAX_PIXELS:-0}}
  export SVP_NEO_ROW_LENGTH=${ROW_LENGTH:-${SVP_NEO_ROW_LENGTH:-0}}
  # registry names need the registry; plain data files do not
  if [[ -n "${SVP_DATASET_REGISTRY:-}" || -f datasets.yaml ]]; then
    svp_check_settings neo dataset_registry
  else
    svp_check_settings neo
  fi
  svp_launch

  cmd=(swift sft
    --model "$MODEL" --model_type neo --template neo
    --external_plugins "$ROOT/plugins/neo.py" "$ROOT/plugins/dataset_registry.py"
    --dataset $DATASETS --torch_dtype "$DTYPE" --seed 42
    --learning_rate "$LR" --lr_scheduler_type "$SCHEDULER"
    --max_steps "$MAX_STEPS" --per_device_train_batch_size "$BATCH"
    --gradient_accumulation_steps "$GRAD_ACC" --max_length "$MAX_LENGTH"
    --truncation_strategy delete --weight_decay "$WEIGHT_DECAY"
    --adam_beta1 0.9 --adam_beta2 0.95 --max_grad_norm 1.0
    --gradient_checkpointing "$GRAD_CKPT" --save_steps "$SAVE_STEPS"
    --logging_steps "$LOGGING_STEPS" --report_to tensorboard
    --dataloader_num_workers "$NUM_WORKERS" --output_dir "$OUTPUT_DIR")
  [[ "$SCHEDULER" == cosine_with_min_lr ]] &&
    cmd+=(--lr_scheduler_kwargs "{\"min_lr_rate\": $MIN_LR_RATIO}")
  if [[ -n "${WARMUP_STEPS:-}" ]]; then cmd+=(--warmup_steps "$WARMUP_STEPS")
  else cmd+=(--warmup_ratio "${WARMUP_RATIO:-0}"); fi
  case "$STAGE" in
    pt)
      [[ "$TUNER" == full ]] || { echo "error: the pt stage is full tuning of an explicit" \
        "parameter set; TUNER=$TUNER" >&2; exit 2; }
      [[ -n "$extra" ]] || { echo "error: EXTRA_LAYERS unknown (no MODEL config)" >&2; exit 2; }
      cmd+=(--tuner_type full --freeze_parameters_ratio 1
            --trainable_parameters_regex "$("$SVP_PYTHON" -m svp.neo.freeze "$extra")") ;;
    mt|sft)
      cmd+=(--tuner_type "$TUNER" --freeze_vit false --freeze_llm false)
      [[ "$TUNER" == lora ]] && cmd+=(--lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA"
                                      --lora_dropout "$LORA_DROPOUT" --target_modules all-linear) ;;
    *) echo "error: STAGE=$STAGE; expected pt, mt or sft" >&2; exit 2 ;;
  esac
  [[ -n "${DEEPSPEED:-}" ]] && cmd+=(--deepspeed "$DEEPSPEED")
  svp_resume "$OUTPUT_DIR"
  cmd+=("${DEVICE_ARGS[@]}" "${RESUME_ARGS[@]}")
  # shellcheck disable=SC2206
  [[ -n "$EXTRA_ARGS" ]] && cmd+=($EXTRA_ARGS)

  # the plan of one packed row: the recipe's architecture, or MODEL's own config
  local plan_model=()
  [[ -f "$MODEL/config.json" ]] && plan_model=(--model "$MODEL")
  svp_plan_memory --recipe "$PLAN_RECIPE" "${plan_model[@]}" --tuner "$TUNER" --batch 1 \
    --seq "${ROW_LENGTH:-$MAX_LENGTH}" --grad-ckpt "$GRAD_CKPT"
  svp_show "SVP_NEO_LOSS_REDUCTION=$SVP_NEO_LOSS_REDUCTION" \
    "SVP_NEO_ROW_LENGTH=$SVP_NEO_ROW_LENGTH" "SVP_NEO_MIN_PIXELS=$SVP_NEO_MIN_PIXELS" \
    "SVP_NEO_MAX_PIXELS=$SVP_NEO_MAX_PIXELS" "${cmd[@]}"
  [[ "${DRY_RUN:-0}" == 1 ]] && exit 0
  exec "${cmd[@]}"
}
