"""Entry: CoVT visual-expert auxiliary losses for ms-swift. Registers the
``covt_qwen2_5_vl`` model type (Qwen2.5-VL + the trainable heads + the visual-thought
tokens), the ``qwen2_5_vl_covt`` template (stages the rows, adds the expert losses) and the
``covt_stage`` callback. Use: ``swift sft --external_plugins plugins/covt.py --model_type
covt_qwen2_5_vl --callbacks covt_stage --modules_to_save covt_heads ...`` with the
``SVP_COVT_*`` settings of plugins/glue/covt.py. See README "Visual-expert losses (CoVT)".
"""

import os
import sys

if __package__ != "plugins":  # loaded by path (--external_plugins): reach the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plugins.glue import covt  # noqa: E402

covt.register()
