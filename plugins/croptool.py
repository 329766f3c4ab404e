"""Entry: crop-tool templates for ms-swift (``qwen2_5_vl_crop``, ``qwen3_vl_crop``), which cut
the crop for every ``<tool_call>[x1, y1, x2, y2]</tool_call>`` on the fly and insert it right
after the call. Use: ``swift sft --external_plugins plugins/croptool.py --template
qwen2_5_vl_crop ...``. See README "Crop tool".
"""

import os
import sys

if __package__ != "plugins":  # loaded by path (--external_plugins): reach the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plugins.glue.croptool import register  # noqa: E402

register()
