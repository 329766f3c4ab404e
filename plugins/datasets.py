"""Entry: the dataset registry (``name%50`` sampling, LLaVA validation) for ms-swift.

Use: ``SVP_DATASET_REGISTRY=reg.yaml swift sft --external_plugins plugins/datasets.py
--dataset name%50 other%200 ...``. See README "Dataset registry".
"""

import os
import sys

if __name__ == "datasets":
    # ms-swift put plugins/ on sys.path and someone imported HuggingFace `datasets`: this
    # file was found first. Step aside and hand the importer the real library.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    del sys.modules["datasets"]
    import importlib

    sys.modules["datasets"] = importlib.import_module("datasets")
else:
    if __package__ != "plugins":  # loaded by path (--external_plugins): reach the package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    from plugins.glue.datasets import register

    register()
