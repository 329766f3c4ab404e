"""Shared start-up for ``--external_plugins`` entry files.

ms-swift imports an entry by path and puts the entry's folder (``plugins/``) first on
``sys.path``. That folder holds ``datasets.py``, which would then shadow HuggingFace
``datasets`` in every process that imports it afresh (spawned dataloader workers, for one).
``detach`` removes that folder again; ``plugins/__init__`` calls it, so it runs as soon as
an entry imports the package (``plugins/datasets.py`` also steps aside by itself when it is
imported as ``datasets``).
"""

from __future__ import annotations

import os
import sys

_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


def detach() -> None:
    """Drop ``plugins/`` from ``sys.path`` (it is a package, never a path entry)."""
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _PLUGIN_DIR]
