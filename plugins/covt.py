"""Entry: CoVT visual-expert losses: the ``covt_qwen2_5_vl`` model type, the
``qwen2_5_vl_covt`` template and the ``covt_stage`` callback. ``swift sft --external_plugins
plugins/covt.py --model_type covt_qwen2_5_vl --callbacks covt_stage ...``. Code: svp/covt;
README "Visual-expert losses (CoVT)"."""

from svp.covt.swift_plugin import register

register()
