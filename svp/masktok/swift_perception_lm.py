"""PerceptionLM in ms-swift (SAMTok's third base model, PLM-1B): the ``perception_lm`` model
type and template, registered by the mask-token plugin. ms-swift 4.6 has neither;
transformers has the model (``PerceptionLMForConditionalGeneration``, timm's Perception
Encoder as the vision tower).

The template writes PerceptionLM's own conversation format (Llama 3 headers, its default
system prompt, ``<|image|>`` where the row's ``<image>`` tag is) and expands each image as its
processor does: the image is cut into up to ``SVP_PLM_MAX_TILES`` tiles plus a thumbnail, and
each tile gives (tile / patch / pooling)^2 ``<|image|>`` tokens. A sample's tiles travel as one
``[tiles, 3, H, W]`` tensor; the collator joins a batch's tiles in order into the
``[1, tiles, 3, H, W]`` the model flattens, so tile features meet their tokens in order (the
model checks the counts). Videos are refused (not wired).
"""

from __future__ import annotations

from typing import Any

import torch
from swift.model import ModelArch, ModelMeta, register_model
from swift.model.register import MODEL_MAPPING, ModelLoader
from swift.template import Template
from swift.template.register import TEMPLATE_MAPPING, register_template
from swift.template.templates.llama import Llama3TemplateMeta
from swift.template.utils import findall

from svp.masktok import settings
from svp.masktok.perception_lm import SYSTEM, image_tokens

MODEL_TYPE = TEMPLATE = "perception_lm"


class PerceptionLMLoader(ModelLoader):
    def get_model(self, model_dir: str, *args, **kwargs):
        from transformers import PerceptionLMForConditionalGeneration

        self.auto_model_cls = self.auto_model_cls or PerceptionLMForConditionalGeneration
        return super().get_model(model_dir, *args, **kwargs)


class PerceptionLMTemplate(Template):
    placeholder_tokens = ["<|image|>"]

    def replace_tag(self, media_type, index, inputs) -> list:
        if media_type != "image":
            raise ValueError(f"perception_lm: {media_type} inputs are not supported (images only)")
        return ["<|image|>"]

    def _encode(self, inputs) -> dict[str, Any]:
        encoded = super()._encode(inputs)
        images = inputs.images
        if not images:
            return encoded
        proc = self.processor
        image_id = self.tokenizer.convert_tokens_to_ids("<|image|>")
        input_ids = encoded["input_ids"]
        where = findall(input_ids, image_id)
        if len(where) != len(images):
            raise ValueError(f"perception_lm: {len(images)} image(s) but {len(where)} <image> "
                             "tag(s) in the conversation")
        tiles = settings.load().plm_max_tiles
        pixels = [proc.image_processor(images=[im], max_num_tiles=tiles,
                                       return_tensors="pt")["pixel_values"][0] for im in images]
        counts = [image_tokens(tuple(p.shape), proc.patch_size, proc.pooling_ratio) for p in pixels]
        input_ids, labels, loss_scale = self._extend_tokens(
            input_ids, encoded["labels"], encoded.get("loss_scale"), where,
            lambda i: [image_id] * counts[i])
        encoded.update(input_ids=input_ids, labels=labels,
                       pixel_values=torch.cat(pixels).to(self.model_info.torch_dtype))
        if loss_scale is not None:
            encoded["loss_scale"] = loss_scale
        return encoded

    def _data_collator_mm_data(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        res = super()._data_collator_mm_data(batch)
        if "pixel_values" in res:  # every sample's tiles in order, as one "image" of tiles
            res["pixel_values"] = res["pixel_values"][None]
        return res


def register() -> None:
    """Idempotent: the ``perception_lm`` template and model type."""
    if TEMPLATE not in TEMPLATE_MAPPING:
        register_template(Llama3TemplateMeta(TEMPLATE, default_system=SYSTEM,
                                             template_cls=PerceptionLMTemplate,
                                             agent_template=None))
    if MODEL_TYPE not in MODEL_MAPPING:
        register_model(ModelMeta(MODEL_TYPE, [], PerceptionLMLoader, template=TEMPLATE,
                                 model_arch=ModelArch.llava_hf,
                                 architectures=["PerceptionLMForConditionalGeneration"],
                                 is_multimodal=True, requires=["timm"], tags=["vision"]))
