"""Entry: mask tokens for ms-swift (vocabulary at load, mask-span loss weight, constrained
decoding). Use: ``swift sft --external_plugins plugins/masktok.py [--loss_scale
default+mask_span] ...``. See README "Mask tokens".
"""

import os
import sys

if __package__ != "plugins":  # loaded by path through --external_plugins
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _root not in sys.path:
        sys.path.insert(0, _root)

from plugins import _entry  # noqa: E402

_entry.detach()

from plugins.glue.masktok import register  # noqa: E402

register()
