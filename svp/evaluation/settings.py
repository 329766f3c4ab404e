"""The evaluation layer's environment: where EvalScope is, and what its process gets.

EvalScope is a client of the served model and lives in its own virtual environment
(``make eval-venv`` makes ``.venv-eval``): it pins its own transformers and an antlr4 runtime
that sam2's hydra cannot load, so it cannot share the training environment. When it is
elsewhere, ``python -m svp.evaluation run --evalscope PATH`` names it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = ("EvalScope runs from its own environment: `make eval-venv` (creates .venv-eval "
                "with requirements/eval.txt), or pass --evalscope PATH")


def evalscope_executable(explicit: str | None = None) -> str:
    """The ``evalscope`` to run: ``explicit`` (``--evalscope``), the repository's
    ``.venv-eval``, then one on PATH; else a FileNotFoundError saying how to install it."""
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise FileNotFoundError(f"evalscope not found at {explicit}: {INSTALL_HINT}")
    for cand in (str(REPO / ".venv-eval" / "bin" / "evalscope"), shutil.which("evalscope")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError(f"evalscope not found: {INSTALL_HINT}")


def evalscope_env() -> dict[str, str]:
    """EvalScope's process environment: this one, offline for the hub unless the user set
    otherwise (the datasets are local folders)."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("MODELSCOPE_OFFLINE", "1")
    return env
