"""Entry: Regional GRPO (crop tool, stage 2): the crop templates, the six ``rgrpo_*`` rewards
and the ``crop_tool`` multi-turn scheduler. ``swift rlhf --rlhf_type grpo --external_plugins
plugins/rgrpo.py --template qwen2_5_vl_crop --multi_turn_scheduler crop_tool --reward_funcs
rgrpo_accuracy ...``. Code: svp/croptool; README "Regional GRPO"."""

from svp.croptool import swift_rgrpo, swift_template

swift_template.register()
swift_rgrpo.register()
