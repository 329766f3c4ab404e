"""ms-swift side of Regional GRPO: reward classes for ``--reward_funcs`` and the ``crop_tool``
multi-turn scheduler for ``--multi_turn_scheduler``.

**Rollout format = SFT format.** The crop template trains on one assistant turn in which
each ``</tool_call>`` is followed by the crop's vision block. The scheduler reproduces that
exactly during rollouts: generation stops at ``</tool_call>`` (the crop templates list it as
a stop word), the box is executed by :meth:`CropPolicy.execute` (the function the template
and the inference loop call), the crop is appended to the request's images, and the turn's
token ids are extended by ``<|vision_start|><|image_pad|><|vision_end|>`` with loss mask 0.
ms-swift then keeps the assistant message as those ids and *continues* it in the next round,
and the training forward re-encodes the same ids: the single ``<|image_pad|>`` is expanded
to the crop's grid by the Qwen template, and the crop itself travels in
``rollout_infos['images']`` (all images: the original first, then the crops in order), which
ms-swift puts in place of the sample's images before encoding. The crop templates count
those id-backed image pads when matching tags to images (see ``swift_template.py``).

A malformed or rejected call gets ``(crop failed: <reason>)`` appended instead (mask 0), so
the model is told and can try again; nothing raises. A trajectory ends when a round stops
without a pending call (an answer, EOS), on ``length``, or at ``--max_turns``.

What was executed is recorded in ``rollout_infos['crop_tool']``: the calls as written (model
space) with their errors, the original and model-input image sizes, the coordinate space and
patch factor, and how many crops were appended. The rewards read that record; they never
count tags in the text.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from functools import cached_property

from swift.rewards import ORM, orms
from swift.rollout import MultiTurnScheduler, multi_turns
from swift.template import Template
from swift.utils import get_logger

from svp.common import swift_trainer
from svp.croptool import rewards, settings, vlmr3_accuracy
from svp.croptool.format import FEEDBACK, STOP, VISION_BLOCK, clean_text, ends_with_open_call
from svp.croptool.geometry import parse_tool_calls
from svp.croptool.judge import Judge

logger = get_logger()
SCHEDULER = "crop_tool"


# ----------------------------------------------------------------------------- scheduler
def pending_call(completion: str, finish_reason: str | None) -> tuple[str, bool]:
    """(completion ending in a closed tool call or '', whether ``</tool_call>`` had to be
    added because the engine stripped the stop string). '' means: no call pending."""
    if not isinstance(completion, str) or finish_reason == "length":
        return "", False
    body = completion.rstrip()
    if body.endswith(STOP):
        return body, False
    if finish_reason == "stop" and ends_with_open_call(body):
        return body + STOP, True
    return "", False


class CropToolScheduler(MultiTurnScheduler):
    """Executes crop-tool calls inside one assistant turn (same format as the SFT data)."""

    def __init__(self, infer_engine=None, max_turns=None, *args, **kwargs):
        super().__init__(infer_engine, max_turns, *args, **kwargs)
        template = self._template or getattr(infer_engine, "template", None)
        family = getattr(template, "crop_family", None)
        if family is None:
            name = getattr(getattr(template, "template_meta", None), "template_type", None)
            raise ValueError(
                f"--multi_turn_scheduler {SCHEDULER} needs a crop template (qwen2_5_vl_crop or "
                f"qwen3_vl_crop, registered by plugins/croptool.py, which plugins/rgrpo.py "
                f"loads); got template {name!r}")
        self.family = family
        self.policy = settings.load().policy(family)
        self.executed = 0
        self.failed = 0
        # decoded main images, keyed by the identity of the request's images[0] (kept alive
        # in the entry so the id cannot be reused): one decode per trajectory, not per crop
        self._sources: OrderedDict[int, tuple] = OrderedDict()

    @cached_property
    def _vision_ids(self) -> list[int]:
        return list(self.tokenizer.encode(VISION_BLOCK, add_special_tokens=False))

    def check_finished(self, infer_request, response_choice, current_turn) -> bool:
        if super().check_finished(infer_request, response_choice, current_turn):
            return True
        body, _ = pending_call(response_choice.message.content, response_choice.finish_reason)
        return not body

    def step(self, infer_request, response_choice, current_turn) -> dict:
        completion = response_choice.message.content or ""
        body, added_stop = pending_call(completion, response_choice.finish_reason)
        ids, mask = self.get_response_token_data(infer_request, response_choice,
                                                 is_continuation=current_turn > 1)
        tok = self.tokenizer
        extra: list[int] = []
        if added_stop:  # the engine stripped "</tool_call>": put it back, unsampled
            extra += tok.encode(STOP, add_special_tokens=False)
            msg = infer_request.messages[-1]
            if isinstance(msg.get("content"), str):
                msg["content"] += STOP
        calls = parse_tool_calls(body)
        call = calls[-1] if calls and calls[-1].end == len(body) else None
        state = self._state(infer_request)
        crop, reason = None, None
        if call is None:
            reason = "no readable tool call before </tool_call>"
        elif call.box is None:
            reason = call.error
        else:
            try:
                crop, _, reason = self.policy.execute(self._source(infer_request), call.box)
            except (OSError, ValueError) as exc:  # unreadable image: tell, do not crash
                reason = f"image could not be read: {exc}"
        state["calls"].append({"box": list(call.box) if call and call.box else None,
                               "error": None if crop is not None else reason})
        if crop is not None:
            infer_request.images.append(crop)
            state["executed"] += 1
            self.executed += 1
            extra += self._vision_ids
        else:
            self.failed += 1
            extra += tok.encode(FEEDBACK.format(reason=reason), add_special_tokens=False)
            if self.failed in (1, 10, 100) or self.failed % 1000 == 0:
                logger.warning(f"crop tool: rejected call ({reason}); {self.failed} rejected, "
                               f"{self.executed} executed so far")
        return {"infer_request": infer_request,
                "response_token_ids": ids + extra,
                "response_loss_mask": mask + [0] * len(extra),
                "rollout_infos": {"crop_tool": copy.deepcopy(state),
                                  "images": list(infer_request.images)}}

    async def on_turn_end(self, infer_request, response_choice, current_turn) -> dict:
        """Attach the record on every round, so a trajectory without calls has one too."""
        return {"rollout_infos": {"crop_tool": copy.deepcopy(self._state(infer_request))}}

    def _source(self, infer_request):
        """The original main image, decoded once per trajectory (small LRU)."""
        key = infer_request.images[0]
        hit = self._sources.get(id(key))
        if hit is not None and hit[0] is key:
            self._sources.move_to_end(id(key))
            return hit[1]
        image = Template._load_image(key, True)
        self._sources[id(key)] = (key, image)
        while len(self._sources) > 256:
            self._sources.popitem(last=False)
        return image

    def _state(self, infer_request) -> dict:
        """The trajectory's record, kept on the request; created on first use."""
        state = infer_request.data_dict.get("crop_tool")
        if state is None:
            state = infer_request.data_dict["crop_tool"] = self._new_state(infer_request)
        return state

    def _new_state(self, infer_request) -> dict:
        state = {"calls": [], "executed": 0, "space": self.policy.space,
                 "factor": self.policy.factor, "image_wh": None, "model_wh": None}
        if infer_request.images:
            try:
                wh = self._source(infer_request).size
                state["image_wh"] = list(wh)
                state["model_wh"] = list(self.policy.main_size(*wh))
            except (OSError, ValueError) as exc:
                logger.warning(f"crop tool: main image unreadable ({exc}); crops will fail")
        return state


# ----------------------------------------------------------------------------- rewards
_UNSET = object()
_SHARED_COLUMNS = ("rollout_infos", "solution", "gt_boxes", "messages", "source")


class _Batch:
    """What the six rewards share about one batch of completions, worked out once.

    ms-swift calls every reward function in turn with the *same* completions list and the
    same column lists (``compute_rewards_per_func`` in ``swift/rl_core/grpo_algorithm.py``),
    so the cleaned text, the scheduler's record and the accuracy (which the tool reward
    needs too) are computed on the first call that asks and reused by the others. A batch is
    recognised by identity (the list, each completion in it, each column list); anything
    else is a new batch, so a caller that mutates or rebuilds its lists gets fresh scores.
    """

    def __init__(self, completions, columns):
        self.completions = completions
        self.items = tuple(completions)
        self.columns = _column_snapshot(columns)
        n = len(self.items)
        self.infos = columns.get("rollout_infos") or [None] * n
        self._clean: list = [_UNSET] * n
        self._traj: list = [_UNSET] * n
        self._accuracy: dict[str, list] = {}

    def same(self, completions, columns) -> bool:
        return (completions is self.completions and _same_items(completions, self.items)
                and all(a is b or (isinstance(a, list) and _same_items(a, b))
                        for a, b in zip(_column_snapshot(columns, lists=False), self.columns,
                                        strict=True)))

    def text(self, i: int) -> str:
        """What the model wrote (vision blocks and failure notes removed)."""
        if self._clean[i] is _UNSET:
            text = self.items[i]
            self._clean[i] = clean_text(text) if isinstance(text, str) else ""
        return self._clean[i]

    def trajectory(self, i: int) -> rewards.Trajectory | None:
        if self._traj[i] is _UNSET:
            self._traj[i] = rewards.Trajectory.from_infos(self.infos[i])
        return self._traj[i]

    def accuracy(self, i: int, compute, kind: str = "ours") -> float:
        """One accuracy per completion and rule set (``ours``, ``vlmr3``)."""
        cache = self._accuracy.setdefault(kind, [_UNSET] * len(self.items))
        if cache[i] is _UNSET:
            cache[i] = compute()
        return cache[i]


def _column_snapshot(columns, lists: bool = True) -> tuple:
    """The shared columns; ``lists``: each list as a tuple of its items (their identities)."""
    return tuple(tuple(v) if lists and isinstance(v, list) else v
                 for v in (columns.get(k) for k in _SHARED_COLUMNS))


def _same_items(now, then) -> bool:
    return len(now) == len(then) and all(map(operator.is_, now, then))


_last_batch: _Batch | None = None


def _batch(completions, columns) -> _Batch:
    global _last_batch
    if _last_batch is None or not _last_batch.same(completions, columns):
        _last_batch = _Batch(completions, columns)
    return _last_batch


class _RewardBase(ORM):
    """Per-completion loop with the one guarantee every reward gives: a finite float in
    range (or None where not applicable), never an exception, whatever the model wrote."""

    name = ""
    errors = 0

    def __call__(self, completions, **columns) -> list[float | None]:
        batch = _batch(completions, columns)
        self.prepare(completions, columns)
        out: list[float | None] = []
        for i in range(len(completions)):
            try:
                value = self.score(i, batch, columns)
            except Exception as exc:  # noqa: BLE001 - rewards must not stop training
                type(self).errors += 1
                logger.warning(f"{self.name}: scoring failed ({exc!r}); scored 0 "
                               f"({type(self).errors} so far)")
                value = 0.0
            out.append(None if value is None else float(value))
        return out

    def prepare(self, completions, columns) -> None:
        """Hook for batch-level work (the judge's concurrent requests)."""

    def score(self, i: int, batch: _Batch, columns) -> float | None:
        raise NotImplementedError


def _column(columns, name, i):
    col = columns.get(name)
    return col[i] if isinstance(col, list | tuple) and i < len(col) else None


def _question(columns, i) -> str:
    messages = _column(columns, "messages", i) or []
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"].replace("<image>", "").strip()
    return ""


class _AccuracyMixin:
    """Shared by the accuracy and the tool reward: one judge, one cache."""

    judge: Judge | None = None
    _judge_ready = False

    @classmethod
    def _get_judge(cls) -> Judge | None:
        if not _AccuracyMixin._judge_ready:
            _AccuracyMixin.judge = settings.load().judge()
            _AccuracyMixin._judge_ready = True
        return _AccuracyMixin.judge

    def prepare(self, completions, columns) -> None:
        if "solution" not in columns:
            raise ValueError(f"{self.name} needs a 'solution' column in the dataset (the "
                             "ground-truth answer); see README 'Regional GRPO' for the format")
        judge = self._get_judge()
        if judge is not None:
            judge.prefetch([t for i, text in enumerate(completions) if isinstance(text, str)
                            for t in self._judge_requests(text, columns, i)])

    def _judge_requests(self, text: str, columns, i: int) -> list[tuple[str, str, str]]:
        """(question, gold, prediction) triples this accuracy would ask the judge."""
        return [(_question(columns, i), gold, pred)
                for gold, pred in rewards.judge_requests(text, _column(columns, "solution", i))]

    def accuracy(self, i: int, batch: _Batch, columns) -> float:
        return batch.accuracy(i, lambda: rewards.accuracy_reward(
            batch.text(i), _column(columns, "solution", i), self._get_judge(),
            _question(columns, i), cleaned=True))


class _Vlmr3AccuracyMixin(_AccuracyMixin):
    """VLM-R3's accuracy (its rules by the row's ``source``), for the rewards of
    ``REWARD_SET=vlmr3``; the same judge (where upstream asks its LLM), the same cache."""

    def _judge_requests(self, text: str, columns, i: int) -> list[tuple[str, str, str]]:
        return vlmr3_accuracy.judge_requests(clean_text(text), _column(columns, "solution", i),
                                             _column(columns, "source", i),
                                             _question(columns, i))

    def accuracy(self, i: int, batch: _Batch, columns) -> float:
        return batch.accuracy(i, lambda: vlmr3_accuracy.vlmr3_accuracy(
            batch.text(i), _column(columns, "solution", i), _column(columns, "source", i),
            _question(columns, i), self._get_judge()), kind="vlmr3")


class Vlmr3AccuracyReward(_Vlmr3AccuracyMixin, _RewardBase):
    name = "rgrpo_accuracy_vlmr3"

    def score(self, i, batch, columns):
        return self.accuracy(i, batch, columns)


class AccuracyReward(_AccuracyMixin, _RewardBase):
    name = "rgrpo_accuracy"

    def score(self, i, batch, columns):
        return self.accuracy(i, batch, columns)


class ToolReward(_AccuracyMixin, _RewardBase):
    name = "rgrpo_tool"

    def score(self, i, batch, columns):
        return rewards.tool_reward(batch.trajectory(i), self.accuracy(i, batch, columns))


class FormatReward(_RewardBase):
    name = "rgrpo_format"

    def score(self, i, batch, columns):
        return rewards.format_reward(batch.text(i), cleaned=True)


class CropValidReward(_RewardBase):
    name = "rgrpo_crop_valid"

    def score(self, i, batch, columns):
        return rewards.crop_valid_reward(batch.trajectory(i))


class RegionIouReward(_RewardBase):
    name = "rgrpo_region_iou"

    def score(self, i, batch, columns):
        return rewards.region_iou_reward(batch.trajectory(i), _column(columns, "gt_boxes", i))


class SegmentLengthReward(_RewardBase):
    name = "rgrpo_segment_length"

    def score(self, i, batch, columns):
        return rewards.segment_length_reward(batch.text(i), cleaned=True)


class Vlmr3FormatReward(_RewardBase):
    name = "rgrpo_format_vlmr3"

    def score(self, i, batch, columns):
        return rewards.vlmr3_format_reward(batch.text(i))


class Vlmr3RegionsReward(_Vlmr3AccuracyMixin, _RewardBase):
    name = "rgrpo_regions_vlmr3"

    def score(self, i, batch, columns):
        return rewards.vlmr3_regions_reward(batch.text(i), self.accuracy(i, batch, columns))


class Vlmr3SegmentLengthReward(_RewardBase):
    name = "rgrpo_segment_length_vlmr3"

    def score(self, i, batch, columns):
        return rewards.vlmr3_segment_length_reward(batch.text(i))


REWARD_CLASSES = [AccuracyReward, FormatReward, CropValidReward, RegionIouReward,
                  SegmentLengthReward, ToolReward, Vlmr3AccuracyReward, Vlmr3FormatReward,
                  Vlmr3RegionsReward, Vlmr3SegmentLengthReward]


def _named_for_logging(cls):
    """ms-swift logs a reward under its class name: give each the name users pass."""
    doc = {**rewards.REWARDS, **rewards.VLMR3_REWARDS}[cls.name][2]
    return type(cls.name, (cls,), {"__module__": __name__, "__doc__": doc})


REGISTERED = {cls.name: _named_for_logging(cls) for cls in REWARD_CLASSES}


def register() -> None:
    """Put the rewards in ``orms`` and the scheduler in ``multi_turns`` (idempotent)."""
    settings.load()  # validated and logged at start-up
    swift_trainer.register()
    orms.update(REGISTERED)
    multi_turns[SCHEDULER] = CropToolScheduler
