# Sourced by every recipe: what they all share. The SVP_* settings have their defaults in
# Python (svp/<capability>/settings.py), never here; recipes pass on what the user set.

# The interpreter of the environment that runs swift (it imports svp): `python` on PATH, or
# SVP_PYTHON=/path/to/venv/bin/python.
SVP_PYTHON=${SVP_PYTHON:-python}

svp_check_settings() {  # svp_check_settings CAPABILITY...: validate and print the SVP_* values
  local rc=0
  # the image budget as this shell has it (set, exported or not): checked with the settings
  MAX_PIXELS="${MAX_PIXELS:-}" MIN_PIXELS="${MIN_PIXELS:-}" \
    "$SVP_PYTHON" -m svp.common.settings "$@" || rc=$?
  if (( rc == 2 )); then exit 2; fi  # a bad setting: the message names it
  if (( rc != 0 )); then
    echo "error: '$SVP_PYTHON -m svp.common.settings' failed; SVP_PYTHON must be the python" \
         "of the environment with swift and svp installed (pip install -e .)" >&2
    exit 2
  fi
}

svp_check_model() {  # svp_check_model NAME VALUE: VALUE is a local model folder or a hub id
  # ms-swift takes anything that is not a folder for a hub id (ModelScope, or Hugging Face
  # with USE_HF=1): a mistyped local path fails there after network retries, far from here.
  local name=$1 value=$2
  [[ -d "$value" || "${DRY_RUN:-0}" == 1 ]] && return 0  # a chain's stages write theirs later
  if [[ "$value" == /* || "$value" == ./* || "$value" == ../* || "$value" == "~"* ]]; then
    echo "error: $name=$value: model directory not found" >&2; exit 2
  fi
  if [[ "$value" == */*/* || ( "$value" == */* && -d "${value%%/*}" ) ]]; then
    echo "error: $name=$value: no such local folder (${value%%/*}/ is local, so this is not" \
         "a hub id org/name); check the path the previous stage wrote" >&2
    exit 2
  fi
}

svp_show() {  # svp_show WORD...: one line a shell reads back as the same words (dry runs
  # are pasted and run: JSON values and regexes are quoted, `|` stays an argument)
  "$SVP_PYTHON" -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@"
}

newest_checkpoint() {  # newest_checkpoint OUTPUT_DIR: highest-step complete checkpoint-N,
  "$SVP_PYTHON" -m svp.common.checkpoints "$1"  # or nothing; incomplete ones named on stderr
}

svp_resume() {  # svp_resume OUTPUT_DIR: RESUME_ARGS from RESUME
  # RESUME unset or 0: a fresh run (ms-swift starts a new v<N> folder), said out loud when
  # OUTPUT_DIR already holds a checkpoint; RESUME=1: continue from the newest complete
  # checkpoint there (half-written ones are passed over); RESUME=PATH: that checkpoint,
  # refused when incomplete.
  RESUME_ARGS=()
  local ckpt
  case "${RESUME:-0}" in
    0|no|false)
      ckpt=$(newest_checkpoint "$1")
      if [[ -n "$ckpt" ]]; then
        echo "note: $1 already holds $ckpt; this run starts again from step 0 in a new" \
          "version folder (RESUME=1 continues from that checkpoint)" >&2
      fi
      ;;
    1|yes|true|auto)
      ckpt=$(newest_checkpoint "$1")
      if [[ -n "$ckpt" ]]; then
        RESUME_ARGS=(--resume_from_checkpoint "$ckpt")
        echo "resuming from $ckpt"
      else
        echo "RESUME=${RESUME}: no complete checkpoint under $1; starting from step 0"
      fi
      ;;
    *)
      "$SVP_PYTHON" -m svp.common.checkpoints --check "$RESUME" ||
        { echo "error: RESUME=$RESUME cannot be resumed from (see above)" >&2; exit 2; }
      RESUME_ARGS=(--resume_from_checkpoint "$RESUME")
      echo "resuming from $RESUME"
      ;;
  esac
}

svp_launch() {  # svp_launch: check the launch variables and set DEVICE_ARGS for this machine
  # Multi-GPU and multi-node go through ms-swift's own launcher (torchrun), which reads
  # NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT from the environment.
  local nnodes=${NNODES:-1}
  # DeepSpeed needs a launcher even for one process (without torchrun it looks for MPI)
  [[ -n "${DEEPSPEED:-}" && -z "${NPROC_PER_NODE:-}" ]] && export NPROC_PER_NODE=1
  if (( nnodes > 1 )); then
    [[ -n "${NODE_RANK:-}" && -n "${MASTER_ADDR:-}" ]] || {
      echo "error: NNODES=$nnodes needs NODE_RANK (0..$((nnodes - 1)), one per node) and" \
           "MASTER_ADDR (the address of node 0) on every node" >&2; exit 2; }
    (( NODE_RANK >= 0 && NODE_RANK < nnodes )) || {
      echo "error: NODE_RANK=$NODE_RANK is not in 0..$((nnodes - 1))" >&2; exit 2; }
  fi
  echo "launch: NPROC_PER_NODE=${NPROC_PER_NODE:-1} NNODES=$nnodes NODE_RANK=${NODE_RANK:-0}" \
       "MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=${MASTER_PORT:-29500}"
  # Without a GPU, transformers only wraps the model for a multi-process job when told the
  # job is on CPU; it would otherwise train every rank alone (the plugins refuse that run).
  # fp16 mixed precision is a GPU feature (ms-swift turns it on for float32 weights, and
  # DeepSpeed's CPU accelerator rejects it).
  DEVICE_ARGS=()
  # torch is asked only where a GPU could be (device nodes or a driver tool present): its
  # import costs seconds, and a machine without either has none
  local gpus=0 maybe=0
  compgen -G "/dev/nvidia[0-9]*" >/dev/null && maybe=1
  [[ -e /dev/kfd ]] && maybe=1  # ROCm
  command -v nvidia-smi >/dev/null && maybe=1
  [[ "${CUDA_VISIBLE_DEVICES-unset}" == "" || "${CUDA_VISIBLE_DEVICES:-}" == -1 ]] && maybe=0
  if (( maybe )); then
    gpus=$("$SVP_PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null) ||
      gpus=0
  fi
  if [[ "$gpus" == 0 ]]; then
    DEVICE_ARGS=(--use_cpu true --fp16 false)
    # gloo only for a real multi-process job: accelerate fails on a backend without a group
    (( ${NPROC_PER_NODE:-1} * nnodes > 1 )) && DEVICE_ARGS+=(--ddp_backend gloo)
    echo "no GPU visible: training on CPU processes with ${DEVICE_ARGS[*]}"
  fi
}

svp_plan_memory() {  # svp_plan_memory ARGS...: print the per-GPU memory plan of this launch
  # (data_tools/plan_memory.py on the real architecture, meta device); warns, never stops.
  local zero=0 rc=0 out
  case "${DEEPSPEED:-}" in *zero3*) zero=3 ;; *zero2*) zero=2 ;; esac
  out=$("$SVP_PYTHON" "$(dirname "${BASH_SOURCE[0]}")/../data_tools/plan_memory.py" \
    --gpus $(( ${NPROC_PER_NODE:-1} * ${NNODES:-1} )) --zero "$zero" "$@" 2>&1) || rc=$?
  if (( rc == 0 || rc == 1 )); then
    printf '%s\n' "$out"
  fi
  if (( rc == 1 )); then
    echo "warning: the memory plan above does not fit; more GPUs, DEEPSPEED=zero3, a smaller" \
         "BATCH or MAX_LENGTH, or GRAD_CKPT=true would" >&2
  elif (( rc != 0 )); then  # not an error of the run: the planner lacks this architecture
    echo "note: no memory plan for MODEL=${MODEL:-$BASE_MODEL}: ${out##*error: }" >&2
  fi
  return 0
}
