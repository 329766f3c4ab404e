"""Settings of CoVT: the only reader of its ``SVP_COVT_*`` variables.

``swift sft|export|infer`` and the data tools all read the same variables, so a model is
loaded, trained, merged and decoded with the same experts and heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from svp.common import settings as s
from svp.covt.tokens import SPECS, Schedule, ThoughtConfig


def _schedule(text: str) -> str:
    Schedule.parse(text)  # validated here, built with aux_until by CovtSettings.schedule
    return text


def _weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        name, _, w = item.partition("=")
        try:
            out[name] = float(w)
        except ValueError:
            raise ValueError(f"bad weight in {item!r} (expected expert=number)") from None
        if not math.isfinite(out[name]) or out[name] < 0:
            raise ValueError(f"bad weight in {item!r} (a loss weight is a finite number >= 0; "
                             "a negative one would train the expert head away from its target)")
    return out


def _ckpt(name: str, what: str):
    return s.env(f"SVP_COVT_{name.upper()}_CKPT", None, s.text,
                 f"local {what} for the real `{name}` expert (nothing is downloaded)")


@dataclass(frozen=True)
class CovtSettings:
    thought: ThoughtConfig = s.env(
        "SVP_COVT_EXPERTS", ThoughtConfig.parse(None), ThoughtConfig.parse,
        "upstream's `VISUAL_MODEL_ID`: the experts in order, optionally with token counts "
        "(`sam:16,depth:4`)")
    backend: str = s.env(
        "SVP_COVT_BACKEND", "real", s.choice("real", "standin"),
        "`real` (the checkpoints below) or `standin` (seeded tiny experts, for dry runs)")
    schedule_spec: str = s.env(
        "SVP_COVT_SCHEDULE", "paper", _schedule,
        "`paper`, one stage, or `stage@step,...` by global step (e.g. "
        "`generation@0,reasoning@3000`)")
    aux_until: int | None = s.env(
        "SVP_COVT_AUX_UNTIL", None, s.integer(minimum=0),
        "global step from which only the LM loss counts (unset: never)")
    weights: dict = s.env(
        "SVP_COVT_WEIGHTS", {}, _weights,
        "per-expert weights on top of upstream's loss scales (`sam=1,depth=2`)")
    sam_empty: str = s.env(
        "SVP_COVT_SAM_EMPTY", "zero", s.choice("zero", "background"),
        "SAM loss of an image where the expert found no mask: `zero` (upstream) or "
        "`background` (ours: every token pushed to background, BCE to 0)")
    sam_positions: str = s.env(
        "SVP_COVT_SAM_POSITIONS", "rope", s.choice("rope", "additive"),
        "positions of SAM's thought tokens in its head: `rope` (upstream: the hidden states "
        "rotated by token index) or `additive` (ours before: a sinusoid added to them)")
    dino_input: str = s.env(
        "SVP_COVT_DINO_INPUT", "upstream", s.choice("upstream", "full448"),
        "DINOv2's input: `upstream` (a 256-px image zero-padded into the 448 crop, as "
        "upstream's processor call gives it) or `full448` (ours: a real 448 view)")
    depth_input: str = s.env(
        "SVP_COVT_DEPTH_INPUT", "upstream", s.choice("upstream", "direct"),
        "Depth Anything's input: `upstream` (squashed to 256 px, then its own cubic resize to "
        "518; depth back to 256 with align_corners) or `direct` (ours: the original straight "
        "to 518, more detail)")
    turns: str = s.env(
        "SVP_COVT_TURNS", "first", s.choice("first", "all"),
        "turns of a training row: `first` (upstream: the first question/answer pair only, "
        "later turns and their pictures dropped) or `all` (ours: every turn, the first staged)")
    tags: str = s.env(
        "SVP_COVT_TAGS", "tokens", s.choice("tokens", "text"),
        "`<think>`, `</think>`, `<answer>`, `</answer>`: `tokens` (upstream's train.py: four "
        "added tokens whose rows train with the thought tokens') or `text` (ours before: "
        "the tokenizer's own pieces)")
    resize: str = s.env(
        "SVP_COVT_RESIZE", "keep", s.choice("keep", "448"),
        "the training picture the model sees: `keep` (ours: aspect kept within the recipe's "
        "MAX_PIXELS, as the model is evaluated) or `448` (upstream's run.sh: squashed to 448x448 "
        "bicubic, 256 tokens); the experts see the original either way")
    head_lr: float = s.env(
        "SVP_COVT_HEAD_LR", 1e-5, s.number(positive=True),
        "learning rate of the heads' projections, queries and cross-attention under the "
        "recipe's `--optimizer covt` (upstream's `--projection_layer_lr` 1e-5; LoRA and the "
        "depth MLP take `--learning_rate`)")
    cache: str | None = s.env(
        "SVP_COVT_CACHE", None, s.text,
        "target cache written by `data_tools/cache_expert_targets.py`")
    sam_ckpt: str | None = _ckpt("sam", "`sam_vit_h_4b8939.pth` (segment-anything)")
    depth_ckpt: str | None = _ckpt("depth", "folder of `Depth-Anything-V2-Large-hf`")
    dino_ckpt: str | None = _ckpt("dino", "folder of `facebook/dinov2-large`")
    pidinet_ckpt: str | None = _ckpt("pidinet", "`table5_pidinet.pth` (carv4 PiDiNet)")
    siglip_ckpt: str | None = _ckpt("siglip", "folder of `google/siglip2-large-patch16-256`")
    metaclip_ckpt: str | None = _ckpt("metaclip", "folder of `facebook/metaclip-h14-fullcc2.5b`")

    def __post_init__(self):
        unknown = [n for n in self.weights if n not in self.thought.experts]
        if unknown:
            raise s.SettingsError(
                f"SVP_COVT_WEIGHTS names {', '.join(map(repr, unknown))}, not one of the "
                f"chosen experts {', '.join(self.thought.experts)} (SVP_COVT_EXPERTS)")

    @property
    def schedule(self) -> Schedule:
        return Schedule.parse(self.schedule_spec, self.aux_until)

    @property
    def checkpoints(self) -> dict[str, Path | None]:
        """Expert name -> its checkpoint path (None when its variable is unset)."""
        return {name: (Path(v).expanduser() if (v := getattr(self, f"{name}_ckpt")) else None)
                for name in SPECS}


    def check_files(self) -> None:
        """With real experts, each chosen expert's checkpoint is set and exists; the cache
        folder, when named, exists (the recipes call this before launching)."""
        if self.backend == "real":
            for name in self.thought.experts:
                path, var = self.checkpoints[name], checkpoint_variable(name)
                if path is None:
                    raise s.SettingsError(f"{var} is unset: the real {name!r} expert needs its "
                                          "local checkpoint (or SVP_COVT_BACKEND=standin)")
                if not path.exists():
                    raise s.SettingsError(f"{var}={path}: no such file or folder")
                missing = missing_packages(name)
                if missing:
                    raise s.SettingsError(
                        f"the real {name!r} expert needs the Python package(s) "
                        f"{', '.join(missing)}, not installed: pip install -c "
                        "requirements/constraints.txt -e '.[covt]' and pip install -c "
                        "requirements/constraints.txt --no-deps controlnet-aux==0.0.10 "
                        "(README, Installing)")
        if self.cache and not Path(self.cache).is_dir():
            raise s.SettingsError(f"SVP_COVT_CACHE={self.cache}: no such folder (write it with "
                                  "data_tools/cache_expert_targets.py)")


#: import names each real expert's code needs beyond the base install (setup.cfg's covt extra
#: and controlnet-aux, which is installed --no-deps)
PACKAGES = {"sam": ("segment_anything",), "depth": ("cv2",), "pidinet": ("controlnet_aux", "cv2")}


def missing_packages(name: str) -> list[str]:
    """The packages expert ``name`` would fail to import, found without importing them (a
    bare ModuleNotFoundError deep in model loading named none of the install steps)."""
    from importlib.util import find_spec

    return [m for m in PACKAGES.get(name, ()) if find_spec(m) is None]


def checkpoint_variable(name: str) -> str:
    """The variable that names expert ``name``'s checkpoint (for messages)."""
    return f"SVP_COVT_{name.upper()}_CKPT"


def load(environ=None) -> CovtSettings:
    return s.load(CovtSettings, "covt", environ)
