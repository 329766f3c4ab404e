"""Entry: mask tokens (SAMTok). ``swift sft --external_plugins plugins/masktok.py
[--loss_scale default+mask_span] ...``. Code: svp/masktok; README "Mask tokens"."""

from svp.masktok.swift_plugin import register

register()
