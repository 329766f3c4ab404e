"""Entry: the dataset registry (``name%50`` sampling, LLaVA validation) for ms-swift.

Use: ``SVP_DATASET_REGISTRY=reg.yaml swift sft --external_plugins plugins/datasets.py
--dataset name%50 other%200 ...``. See README "Dataset registry".
"""

import os
import sys

if __package__ != "plugins":  # loaded by path through --external_plugins
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _root not in sys.path:
        sys.path.insert(0, _root)

from plugins import _entry  # noqa: E402

_entry.detach()

from plugins.glue.datasets import register  # noqa: E402

register()
