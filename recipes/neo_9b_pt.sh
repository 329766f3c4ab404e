#!/usr/bin/env bash
# NEO-9B stage 1 (PT): as neo_2b_pt.sh (upstream 8B_1PT is the same script), from
#   python data_tools/build_neo.py --llm Qwen3-8B-Base --extra-layers 6 --out neo-9b-init
set -euo pipefail
export PLAN_RECIPE=${PLAN_RECIPE:-neo_9b_pt} EXTRA_LAYERS=${EXTRA_LAYERS:-6}
exec bash "$(dirname "${BASH_SOURCE[0]}")/neo_2b_pt.sh"
