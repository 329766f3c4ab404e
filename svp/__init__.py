"""swift-vlm-plugins: region-level and native-vision skills for VLMs, trained with ms-swift.

One sub-package per capability (``dataset_registry``, ``masktok``, ``croptool``, ``covt``),
each readable end to end: pure modules, the files that import ms-swift (named ``swift_*.py``),
and ``settings.py``, the only reader of that capability's ``SVP_*`` environment variables.
``common`` holds what two or more capabilities use; ``testing`` builds tiny models and
synthetic data for tests, the demo and benchmarks. The ``--external_plugins`` files live in
``plugins/`` beside this package and only import and register. Importing ``svp`` has no side
effects.
"""

__version__ = "0.2.0"
