"""swift-vlm-plugins: region-level skills for Qwen2.5-VL / Qwen3-VL, trained with ms-swift.

Each top-level module (``plugins/datasets.py``, ...) is an ``--external_plugins`` entry that
only imports and registers; ``plugins.core`` holds the building blocks that never import
ms-swift; ``plugins.glue`` holds the ms-swift subclasses the entries register.
"""

__version__ = "0.1.0"

from plugins import _entry as _entry

_entry.detach()  # ms-swift put plugins/ on sys.path to load an entry; take it off again
