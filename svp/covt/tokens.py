"""Visual-thought tokens: which experts, how many pad tokens each, and the text around them.

A visual thought for one expert is ``<|anchor_start|>`` + n x ``<|<expert>_pad|>`` +
``<|anchor_end|>`` (upstream CoVT ``train/src/training/constants.py``, ``data.py``). The
expert set is one option, upstream's ``VISUAL_MODEL_ID`` (``"sam,depth,dino"``); per-expert
counts default to upstream's (SAM 8, the others 4) and can be overridden as
``"sam:16,depth:4"``. Order is kept: it is the order of the groups in the text and of the
auxiliary losses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ANCHOR_START = "<|anchor_start|>"
ANCHOR_END = "<|anchor_end|>"
#: the reasoning tags upstream adds as tokens (``train.py``: ``processor.tokenizer.add_tokens``)
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
UPSTREAM_SIDE = 448  # upstream run.sh: --image_resized_width/height 448 (16 x 16 merged patches)


@dataclass(frozen=True)
class ExpertSpec:
    name: str          # VISUAL_MODEL_ID entry
    pad: str           # its pad token
    n_tokens: int      # default pad count
    task: str          # how the text names what the tokens hold


SPECS: dict[str, ExpertSpec] = {s.name: s for s in (
    ExpertSpec("sam", "<|sam_pad|>", 8, "segmentation"),
    ExpertSpec("depth", "<|depth_pad|>", 4, "depth map"),
    ExpertSpec("dino", "<|dino_pad|>", 4, "perception feature"),
    ExpertSpec("pidinet", "<|pidinet_pad|>", 4, "edge map"),
    ExpertSpec("siglip", "<|siglip_pad|>", 4, "clip feature"),
    ExpertSpec("metaclip", "<|metaclip_pad|>", 4, "metaclip feature"),
)}
DEFAULT_EXPERTS = "sam,depth,dino"


@dataclass(frozen=True)
class ThoughtConfig:
    """The chosen experts in order, with their pad counts."""

    experts: tuple[str, ...]
    counts: tuple[int, ...]

    @classmethod
    def parse(cls, option: str | None = None) -> ThoughtConfig:
        """``"sam,depth,dino"`` or ``"sam:8,depth:4"`` (also space separated or a list)."""
        option = DEFAULT_EXPERTS if option is None else option
        items = option if isinstance(option, list | tuple) else option.replace(",", " ").split()
        experts, counts = [], []
        for item in items:
            name, _, n = str(item).strip().partition(":")
            name = name.strip().lower()
            if name not in SPECS:
                raise ValueError(f"unknown visual expert {name!r}; choose from "
                                 f"{', '.join(SPECS)} (e.g. 'sam,depth,dino')")
            if name in experts:
                raise ValueError(f"visual expert {name!r} given twice in {option!r}")
            try:
                count = int(n) if n else SPECS[name].n_tokens
            except ValueError as exc:
                raise ValueError(f"bad token count in {item!r}") from exc
            if not 1 <= count <= 256:
                raise ValueError(f"token count for {name} must be 1..256, got {count}")
            experts.append(name)
            counts.append(count)
        if not experts:
            raise ValueError("no visual expert chosen")
        return cls(tuple(experts), tuple(counts))

    def __str__(self) -> str:
        """The option text that parses back to this config (``sam:8,depth:4,dino:4``)."""
        return ",".join(f"{e}:{n}" for e, n in zip(self.experts, self.counts, strict=True))

    def count(self, expert: str) -> int:
        return self.counts[self.experts.index(expert)]

    def new_tokens(self) -> list[str]:
        """Tokens to add to the tokenizer: the anchors and each chosen expert's pad."""
        return [ANCHOR_START, ANCHOR_END] + [SPECS[e].pad for e in self.experts]

    def group(self, expert: str) -> str:
        return ANCHOR_START + SPECS[expert].pad * self.count(expert) + ANCHOR_END

    def thought(self, experts=None) -> str:
        return "".join(self.group(e) for e in (experts or self.experts))


def _names(experts) -> str:
    """The generation-stage question's list, as upstream's data.py joins it (", ")."""
    return ", ".join(SPECS[e].task for e in experts)


# ----------------------------------------------------------------------------- stages
STAGES = ("understanding", "generation", "reasoning", "efficient")


def build_turn(stage: str, question: str, answer: str, cfg: ThoughtConfig,
               rng: random.Random | None = None) -> tuple[str, str]:
    """(user text, assistant text) of one sample in ``stage`` (as upstream CoVT's ``data.py``).

    understanding: the tokens follow the image in the prompt, the answer is unchanged;
    generation: the question asks for the visual features and the answer is the tokens;
    reasoning: ``<think> Because the <task> of the image is <tokens>, ... </think>`` then
    ``<answer>``; efficient: like reasoning with a random non-empty subset of the experts
    (order kept), or, one time in six, the plain answer. ``question`` may start with
    ``<image>``; the tokens go right after it.
    """
    rng = rng or random.Random(0)
    image = "<image>" if question.startswith("<image>") else ""
    q = question[len(image):].lstrip("\n")
    if stage == "understanding":
        return image + cfg.thought() + q, answer  # upstream: right after <|vision_end|>
    if stage == "generation":
        return f"{image}What is the {_names(cfg.experts)} of the image?", cfg.thought()
    if stage in ("reasoning", "efficient"):
        experts = list(cfg.experts)
        if stage == "efficient":
            if rng.randint(0, 5) == 0:
                return image + q, answer
            k = rng.randint(1, len(experts))
            keep = set(rng.sample(experts, k))
            experts = [e for e in experts if e in keep]
        parts = [f"the {SPECS[e].task} of the image is {cfg.group(e)}" for e in experts]
        because = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
        # upstream: "<think> Because " + ... + ". " + " </think>\n<answer> " (two spaces)
        return image + q, f"<think> Because {because}.  </think>\n<answer> {answer} </answer>"
    raise ValueError(f"unknown CoVT stage {stage!r} (one of {STAGES})")


PAPER_SCHEDULE = "understanding@0,generation@4000,reasoning@7000,efficient@10000"


@dataclass(frozen=True)
class Schedule:
    """Which stage each optimizer step trains, and until which step the expert losses count.

    ``starts`` lists (first step, stage) in order. Built from the trainer's *global step*, so
    a resumed run continues where it stopped (upstream counted samples inside the Dataset
    and restarted at 0 on resume). ``Schedule.parse("reasoning")`` is one fixed stage;
    ``"generation@0,reasoning@3000,efficient@6000"`` is upstream's second run (its
    ``train/scripts/run.sh``, expert losses off from step 8000: ``aux_until``); the default
    ``paper`` is the four stages in one run (4000 / 3000 / 3000 / 5000 steps) with the expert
    losses until step 15000. The recipe's default ``RUNS`` is upstream's two runs.
    """

    starts: tuple[tuple[int, str], ...] = ((0, "understanding"), (4000, "generation"),
                                           (7000, "reasoning"), (10000, "efficient"))
    aux_until: int | None = 15000

    def __post_init__(self):
        if not self.starts or self.starts[0][0] != 0:
            raise ValueError(f"a CoVT schedule must start at step 0: {self.starts}")
        steps = [s for s, _ in self.starts]
        if steps != sorted(steps) or len(set(steps)) != len(steps):
            raise ValueError(f"stage start steps must increase: {self.starts}")
        for _, stage in self.starts:
            if stage not in STAGES:
                raise ValueError(f"unknown CoVT stage {stage!r} (one of {', '.join(STAGES)})")
        if self.aux_until is not None and self.aux_until < 0:
            raise ValueError(f"aux_until must be >= 0, got {self.aux_until}")

    @classmethod
    def parse(cls, text: str | None, aux_until: int | None = None) -> Schedule:
        """``"reasoning"`` | ``"stage@step,stage@step,..."`` | ``"paper"`` (``None``: paper)."""
        text = (text or "paper").strip()
        if text == "paper":
            text = PAPER_SCHEDULE
        starts = []
        for item in text.replace(" ", "").split(","):
            stage, _, step = item.partition("@")
            try:
                starts.append((int(step) if step else 0, stage))
            except ValueError as exc:
                raise ValueError(f"bad CoVT schedule entry {item!r} in {text!r} "
                                 f"(expected stage@step)") from exc
        return cls(tuple(starts), aux_until)

    @property
    def multi_stage(self) -> bool:
        return len(self.starts) > 1

    def stage(self, step: int) -> str:
        current = self.starts[0][1]
        for start, stage in self.starts:
            if step >= start:
                current = stage
        return current

    def aux_on(self, step: int) -> bool:
        return self.aux_until is None or step < self.aux_until
