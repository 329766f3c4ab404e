"""ms-swift side of the crop tool: templates that cut crops on the fly.

``qwen2_5_vl_crop`` and ``qwen3_vl_crop`` are the stock Qwen2.5-VL / Qwen3-VL templates plus
one step before encoding: every crop request in an assistant turn that is not already
followed by ``<image>`` (before the next request) gets ``<image>`` right after it, and the
crop itself, cut from the sample's source image by :meth:`CropPolicy.execute` (the function
the inference loop uses, so training sees exactly the crop the model will see), is inserted
into ``images`` at the matching position. Everything after that is the stock template:
image tokens get labels -100 (``replace_tag`` contexts carry no loss), ``</tool_call>`` and
the text after a crop are trained, and the collator computes mrope positions with the
model's ``get_rope_index`` over all images in sequence order.

The source image is decoded once per sample; the main image is given to the model at the
policy size (shorter side ``SVP_CROP_MAIN_SHORT``, default 448; :mod:`svp.croptool.settings`),
so the box numbers in the
text (the model's coordinate space: Qwen2.5-VL resized pixels, Qwen3-VL 0..1000) refer to
it. A request with a bad box keeps its text and gets no crop; the count is logged.
"""

from __future__ import annotations

import re
from functools import cached_property

from swift.template import Template
from swift.template.register import TEMPLATE_MAPPING, register_template
from swift.template.templates.qwen import Qwen2_5VLTemplate, Qwen3VLTemplate
from swift.template.utils import get_token_backed_response_ids
from swift.utils import get_logger

from svp.common import swift_trainer
from svp.croptool import settings
from svp.croptool.format import STOP
from svp.croptool.geometry import CropPolicy, parse_tool_calls

logger = get_logger()
TEMPLATES = {"qwen2_5_vl_crop": "qwen2_5_vl", "qwen3_vl_crop": "qwen3_vl"}
_IMAGE_TAG = "<image>"


class CropToolMixin:
    """Inserts the crops before the stock ``_preprocess_inputs`` runs."""

    crop_family: str = "qwen2_5_vl"
    bad_boxes: int = 0

    @cached_property
    def crop_policy(self) -> CropPolicy:
        """The sizes in force (read once per template, i.e. once per process), checked
        against the bounds ms-swift actually gave the processor: a difference would put the
        boxes of the text in another space than the image the model sees."""
        policy = settings.load().policy(self.crop_family)
        from qwen_vl_utils import vision_process as vp

        if getattr(vp, "_patch", False):  # ms-swift has set the processor's bounds
            f2 = policy.factor ** 2
            actual = (vp.IMAGE_MIN_TOKEN_NUM * f2, vp.IMAGE_MAX_TOKEN_NUM * f2)
            if actual != (policy.min_pixels, policy.max_pixels):
                raise ValueError(
                    f"crop tool: the processor's pixel bounds {actual} differ from the ones "
                    f"this environment gives ({policy.min_pixels}, {policy.max_pixels}); "
                    "set MAX_PIXELS / MIN_PIXELS (or IMAGE_MAX_TOKEN_NUM) once for every "
                    "process, the data converter included")
        return policy

    def _preprocess_inputs(self, inputs) -> None:
        if self.max_pixels is not None:
            raise ValueError("crop tool: --max_pixels rescales the images after the crop tool "
                             "sized them, so the boxes in the text would miss; set the "
                             f"MAX_PIXELS environment variable instead (got --max_pixels "
                             f"{self.max_pixels})")
        if inputs.images:
            self._insert_crops(inputs)
        super()._preprocess_inputs(inputs)

    def _check_space(self, inputs, source_size: tuple[int, int]) -> None:
        """Rows written by data_tools/convert_vlmr3.py record the space of their boxes
        (``crop_space``); a row of another space (Qwen2.5-VL pixels under the Qwen3-VL
        template, or a main image the model is given at another size) stops the run at its
        first row."""
        recorded = (inputs.extra_kwargs or {}).get("crop_space")
        if recorded is None:
            return
        expected = self.crop_policy.data_space(*source_size)
        if recorded != expected:
            raise swift_trainer.FatalRowError(
                f"crop tool: this row's boxes were converted for '{recorded}', but template "
                f"{self.template_meta.template_type} reads them as '{expected}' (its model "
                "family; for Qwen2.5-VL the main image's size under SVP_CROP_MAIN_SHORT and "
                "MAX_PIXELS / MIN_PIXELS): every crop would be cut elsewhere. Convert the data "
                "again with data_tools/convert_vlmr3.py --family matching the template, in the "
                "training environment")

    def prepare_generate_kwargs(self, generate_kwargs, *, model=None):
        """Generation that needs no collective when ZeRO-3's parameters are gathered.

        Under ZeRO-3, transformers makes every ``generate`` call ``synced_gpus`` (each step
        all-reduces "anyone unfinished?"), which is needed while the parameters are
        partitioned. R-GRPO rollouts with the crop tool run a different number of rounds on
        each rank (one rank's trajectories call the tool, another's answer at once), and
        ms-swift lets a rank without pending requests skip ``generate`` in that round: the
        other ranks then wait in that all-reduce forever. ms-swift gathers the whole model
        for generation (``--ds3_gather_for_generation true``, its default), so no step needs
        the other ranks; we then turn ``synced_gpus`` off. Without that gathering the rounds
        would still hang, so ``recipes/rgrpo.sh`` refuses ZeRO-3 rollouts with
        ``--ds3_gather_for_generation false``.
        """
        generate_kwargs = super().prepare_generate_kwargs(generate_kwargs, model=model)
        if model is not None and zero3_gathered(model):
            generate_kwargs.setdefault("synced_gpus", False)
        return generate_kwargs

    def _id_images(self, content) -> int:
        """Image pads inside an assistant message held as token ids (R-GRPO rollouts and
        their training encode): each stands for one image of ``inputs.images``."""
        ids = get_token_backed_response_ids(content)
        return ids.count(self.image_token_id) if ids else 0

    def _add_default_tags(self, inputs) -> None:
        """The stock rule (missing ``<image>`` tags go in front of message 0) counts only
        text tags; with id-held crops it would give each a second tag. ``_insert_crops``
        has already matched every image to a text tag or an id-held pad, so skip it then."""
        if not any(self._id_images(m.get("content")) for m in inputs.messages):
            super()._add_default_tags(inputs)

    def _insert_crops(self, inputs) -> None:
        policy = self.crop_policy
        images = list(inputs.images)
        n_tags = sum(m["content"].count(_IMAGE_TAG) if isinstance(m.get("content"), str)
                     else self._id_images(m.get("content")) for m in inputs.messages)
        if n_tags < len(images):  # what ms-swift would do later: leading tags on message 0
            first = next(m for m in inputs.messages if isinstance(m.get("content"), str))
            first["content"] = _IMAGE_TAG * (len(images) - n_tags) + first["content"]
        ptr, source = 0, None
        for msg in inputs.messages:
            content = msg.get("content")
            if not isinstance(content, str):
                ptr += self._id_images(content)  # crops already executed by the rollout
                continue
            events = [(m.start(), m.end(), None)
                      for m in re.finditer(re.escape(_IMAGE_TAG), content)]
            if msg.get("role") == "assistant":
                events += [(c.start, c.end, c) for c in parse_tool_calls(content)]
            events.sort(key=lambda e: e[0])
            parts, pos = [], 0
            for j, (start, end, call) in enumerate(events):
                if call is None:  # an <image> tag: the next listed image
                    if ptr >= len(images):
                        break  # more tags than images: the stock template reports it
                    if msg.get("role") != "assistant":  # a main image: decode once, size it
                        source = Template._load_image(images[ptr], True)
                        if ptr == 0:
                            self._check_space(inputs, source.size)
                        images[ptr] = policy.main_image(source)
                    ptr += 1
                    continue
                if source is None or (j + 1 < len(events) and events[j + 1][2] is None):
                    # crop given already: an <image> after the call and before the next one
                    # (pre-cut files, the inference loop, VLM-R3's release crops after their
                    # part)
                    continue
                crop, _, reason = policy.execute(source, call.box) if call.box else (
                    None, None, call.error)
                if crop is None:
                    CropToolMixin.bad_boxes += 1
                    logger.warning(f"crop tool: no crop for {content[start:end]!r}: {reason} "
                                   f"({CropToolMixin.bad_boxes} so far)")
                    continue
                parts += [content[pos:end], _IMAGE_TAG]
                pos = end
                images.insert(ptr, crop)
                ptr += 1
            if parts:
                parts.append(content[pos:])
                msg["content"] = "".join(parts)
        inputs.images = images


def zero3_gathered(model) -> bool:
    """True when ``model`` is ZeRO-3 partitioned and all its parameters are gathered now."""
    params = [p for p in model.parameters() if hasattr(p, "ds_status")]
    if not params:
        return False
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return all(p.ds_status == ZeroParamStatus.AVAILABLE for p in params)


class Qwen2_5VLCropTemplate(CropToolMixin, Qwen2_5VLTemplate):
    crop_family = "qwen2_5_vl"


class Qwen3VLCropTemplate(CropToolMixin, Qwen3VLTemplate):
    crop_family = "qwen3_vl"


_CLASSES = {"qwen2_5_vl_crop": Qwen2_5VLCropTemplate, "qwen3_vl_crop": Qwen3VLCropTemplate}


def register() -> None:
    """Register both templates as copies of the stock metas with our classes (idempotent)."""
    from dataclasses import replace

    settings.load()  # validated and logged at start-up
    swift_trainer.register()
    swift_trainer.keep_row_column("crop_space")  # converted rows' space, checked per row
    for name, base in TEMPLATES.items():
        stock = TEMPLATE_MAPPING[base]
        # generation pauses at every call so the tool (inference loop, R-GRPO scheduler) runs
        stop = list(stock.stop_words) + [s for s in (STOP,) if s not in stock.stop_words]
        meta = replace(stock, template_type=name, template_cls=_CLASSES[name], stop_words=stop)
        register_template(meta, exist_ok=True)
