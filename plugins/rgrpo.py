"""Entry: Regional GRPO for ms-swift. Registers the crop templates (``qwen2_5_vl_crop``,
``qwen3_vl_crop``), the rewards (``rgrpo_accuracy``, ``rgrpo_format``, ``rgrpo_crop_valid``,
``rgrpo_region_iou``, ``rgrpo_segment_length``, ``rgrpo_tool``) and the ``crop_tool``
multi-turn scheduler that executes crops during rollouts. Use: ``swift rlhf --rlhf_type grpo
--external_plugins plugins/rgrpo.py --template qwen2_5_vl_crop --multi_turn_scheduler
crop_tool --reward_funcs rgrpo_accuracy rgrpo_format ...``. See README "Regional GRPO".
"""

import os
import sys

if __package__ != "plugins":  # loaded by path (--external_plugins): reach the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plugins.glue import croptool, rgrpo  # noqa: E402

croptool.register()
rgrpo.register()
