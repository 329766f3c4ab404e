"""Finding the newest *complete* checkpoint of an ms-swift run, by step number.

ms-swift writes ``OUTPUT_DIR/v<N>-<date>/checkpoint-<step>``, one ``v<N>`` folder per launch;
a resumed run starts a new one and continues the step count. The newest checkpoint is the
highest step (on a tie, the later launch), never the newest modification time: a merge, a
copy or a ``touch`` must not change which checkpoint a recipe resumes from.

A checkpoint counts only once it is complete. The HF trainer writes a checkpoint folder
piece by piece (weights, then optimizer, scheduler and RNG states, then
``trainer_state.json``), so a job killed while saving leaves a folder that resume cannot use
("Can't find a valid checkpoint", a bare ``JSONDecodeError`` on an empty
``additional_config.json``, a missing ``trainer_state.json``), and a recipe that resumes
from it automatically crashes the same way on every rerun. :func:`checkpoint_problem` says
what is missing; :func:`newest_checkpoint` passes over such folders (``skipped`` receives
them with the reason), so resume takes the last complete one.

``python -m svp.common.checkpoints OUTPUT_DIR`` prints it (nothing when there is none) and
names the incomplete ones on stderr, for the shell recipes; ``--check CHECKPOINT`` exits 1
with the reason when a given checkpoint is incomplete.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_VERSION = re.compile(r"^v(\d+)(?:-|$)")
_CKPT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
# Any one of these holds the weights (full model, sharded model, adapter, DeepSpeed states).
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin",
            "adapter_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-<step>`` folder (None for any other name)."""
    m = _CKPT.match(Path(path).name)
    return int(m.group(1)) if m else None


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from (None when it is complete): the trainer state,
    written last, must be there, parse and name this step; every JSON file must parse; the
    weights must be there (a single file, every shard an index names, or DeepSpeed's
    ``global_step*`` folder) and not empty."""
    ckpt = Path(ckpt)
    step = checkpoint_step(ckpt)
    state_file = ckpt / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE} (a save interrupted?)"
    for path in sorted(ckpt.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return f"{path.name} does not parse ({type(exc).__name__}; a save interrupted?)"
        if path.name == TRAINER_STATE and (not isinstance(doc, dict)
                                           or doc.get("global_step") != step):
            got = doc.get("global_step") if isinstance(doc, dict) else doc
            return f"{TRAINER_STATE} is for step {got!r}, not {step}"
        if path.name in _INDEXES:
            shards = set((doc.get("weight_map") or {}).values()) if isinstance(doc, dict) else set()
            missing = sorted(s for s in shards if not (ckpt / s).is_file()
                             or (ckpt / s).stat().st_size == 0)
            if not shards or missing:
                return f"{path.name} names missing or empty shards {missing[:3]}"
    weights = [ckpt / w for w in _WEIGHTS if (ckpt / w).is_file()]
    if any(w.stat().st_size == 0 for w in weights):
        return f"empty weights file {next(w.name for w in weights if w.stat().st_size == 0)}"
    has_index = any((ckpt / i).is_file() for i in _INDEXES)
    has_deepspeed = any(p.is_dir() and any(p.iterdir()) for p in ckpt.glob("global_step*"))
    if not (weights or has_index or has_deepspeed):
        return "no weights file"
    return None


def newest_checkpoint(output_dir: str | Path,
                      skipped: list[tuple[Path, str]] | None = None) -> Path | None:
    """The highest-step complete ``checkpoint-N`` under ``output_dir`` (directly or in
    ``v*/``). Incomplete ones above it are passed over and, when ``skipped`` is given,
    appended to it with the reason."""
    root = Path(output_dir)
    found = []
    for ckpt in [*root.glob("checkpoint-*"), *root.glob("v*/checkpoint-*")]:
        step = checkpoint_step(ckpt)
        if step is None or not ckpt.is_dir():
            continue
        version = _VERSION.match(ckpt.parent.name) if ckpt.parent != root else None
        found.append((step, int(version.group(1)) if version else -1, ckpt))
    for _, _, ckpt in sorted(found, reverse=True):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        if skipped is not None:
            skipped.append((ckpt, problem))
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--check":  # one given checkpoint: complete or why not
        problem = (checkpoint_problem(args[1]) if checkpoint_step(args[1]) is not None
                   and Path(args[1]).is_dir() else "not a checkpoint-N folder")
        if problem is not None:
            print(f"{args[1]}: {problem}", file=sys.stderr)
            return 1
        return 0
    if len(args) != 1:
        print("usage: python -m svp.common.checkpoints [--check CHECKPOINT | OUTPUT_DIR]",
              file=sys.stderr)
        return 2
    skipped: list[tuple[Path, str]] = []
    ckpt = newest_checkpoint(args[0], skipped)
    for path, why in skipped:
        print(f"checkpoints: passing over {path}: incomplete, {why}", file=sys.stderr)
    if ckpt is not None:
        print(ckpt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
