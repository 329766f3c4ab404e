"""Finding the newest checkpoint of an ms-swift run: the one copy, by step number.

ms-swift writes ``OUTPUT_DIR/v<N>-<date>/checkpoint-<step>``, one ``v<N>`` folder per launch;
a resumed run starts a new one and continues the step count. The newest checkpoint is the
highest step (on a tie, the later launch), never the newest modification time: a merge, a
copy or a ``touch`` must not change which checkpoint a recipe resumes from.

``python -m svp.common.checkpoints OUTPUT_DIR`` prints it (nothing when there is none), for
the shell recipes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_VERSION = re.compile(r"^v(\d+)(?:-|$)")
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-<step>`` folder (None for any other name)."""
    m = _CKPT.match(Path(path).name)
    return int(m.group(1)) if m else None


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step ``checkpoint-N`` under ``output_dir`` (directly or in ``v*/``)."""
    root = Path(output_dir)
    found = []
    for ckpt in [*root.glob("checkpoint-*"), *root.glob("v*/checkpoint-*")]:
        step = checkpoint_step(ckpt)
        if step is None or not ckpt.is_dir():
            continue
        version = _VERSION.match(ckpt.parent.name) if ckpt.parent != root else None
        found.append((step, int(version.group(1)) if version else -1, ckpt))
    return max(found)[2] if found else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m svp.common.checkpoints OUTPUT_DIR", file=sys.stderr)
        return 2
    ckpt = newest_checkpoint(args[0])
    if ckpt is not None:
        print(ckpt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
