"""Entry: mask tokens for ms-swift (vocabulary at load, mask-span loss weight, constrained
decoding). Use: ``swift sft --external_plugins plugins/masktok.py [--loss_scale
default+mask_span] ...``. See README "Mask tokens".
"""

import os
import sys

if __package__ != "plugins":  # loaded by path (--external_plugins): reach the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plugins.glue.masktok import register  # noqa: E402

register()
