"""Entry: crop-tool templates (``qwen2_5_vl_crop``, ``qwen3_vl_crop``) that cut the crop for
every ``<tool_call>[x1, y1, x2, y2]</tool_call>`` on the fly. ``swift sft --external_plugins
plugins/croptool.py --template qwen2_5_vl_crop ...``. Code: svp/croptool; README "Crop tool"."""

from svp.croptool.swift_template import register

register()
