# Sourced by every recipe: what they all share. The SVP_* settings have their defaults in
# Python (svp/<capability>/settings.py), never here; recipes pass on what the user set.

# The interpreter of the environment that runs swift (it imports svp): `python` on PATH, or
# SVP_PYTHON=/path/to/venv/bin/python.
SVP_PYTHON=${SVP_PYTHON:-python}

svp_check_settings() {  # svp_check_settings CAPABILITY...: validate and print the SVP_* values
  local rc=0
  "$SVP_PYTHON" -m svp.common.settings "$@" || rc=$?
  if (( rc == 2 )); then exit 2; fi  # a bad setting: the message names it
  if (( rc != 0 )); then
    echo "error: '$SVP_PYTHON -m svp.common.settings' failed; SVP_PYTHON must be the python" \
         "of the environment with swift and svp installed (pip install -e .)" >&2
    exit 2
  fi
}

newest_checkpoint() {  # newest_checkpoint OUTPUT_DIR: highest-step checkpoint-N, or nothing
  "$SVP_PYTHON" -m svp.common.checkpoints "$1"
}
