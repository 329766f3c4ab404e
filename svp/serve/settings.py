"""The serving layer's environment: ms-swift's variables that the server sets or reads.

``SWIFT_MEDIA_ALLOWED_DIRS`` is where ms-swift's request parsing may read a local picture
path from (it reads content-part paths itself, before our checks): the server points it at
``--image_root``, or at an empty folder so that no local path is read. ``SWIFT_TIMEOUT`` is
ms-swift's timeout for fetching a URL.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def restrict_local_media(root: Path | None) -> str:
    """Point ``SWIFT_MEDIA_ALLOWED_DIRS`` at ``root`` (or at a fresh empty folder); returns
    the value set."""
    value = str(root.resolve()) if root is not None else \
        tempfile.mkdtemp(prefix="svp-no-local-images-")
    os.environ["SWIFT_MEDIA_ALLOWED_DIRS"] = value
    return value


def fetch_timeout() -> float:
    """Seconds to wait for a remote picture (ms-swift's ``SWIFT_TIMEOUT``, default 20)."""
    return float(os.environ.get("SWIFT_TIMEOUT", "20"))
