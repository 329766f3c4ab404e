"""Entry: NEO, the native VLM. ``swift sft --external_plugins plugins/neo.py --model DIR
--model_type neo ...``. Code: svp/neo; README "NEO"."""

from svp.neo.swift_plugin import register

register()
