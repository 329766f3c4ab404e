"""NEO in ms-swift: model type ``neo`` (loader) and template ``neo`` (ms-swift 4.6's model and
template registration).

The template expands every ``<image>`` into ``<img>`` + N ``<IMG_CONTEXT>`` + ``</img>`` after
smart_resize, and in training packs the micro-batch into one row inside the collator (ms-swift's
``--packing`` needs flash-attn, which NEO's 2*head_dim q/k rule out) with the sample boundaries
and upstream's per-token loss weights. The model computes that weighted loss itself; its
``forward`` takes no ``**kwargs`` and the template says the model takes no loss kwargs, so
the HF Trainer divides by the gradient-accumulation steps and ms-swift does not rescale by a
global token count.
"""

from __future__ import annotations

from typing import Any

import torch
from swift.model import ModelMeta, register_model
from swift.model.model_arch import MODEL_ARCH_MAPPING, MultiModelKeys, register_model_arch
from swift.model.register import MODEL_MAPPING, ModelLoader
from swift.template import Template
from swift.template.register import TEMPLATE_MAPPING, register_template
from swift.template.templates.utils import ChatmlTemplateMeta
from swift.template.utils import findall
from swift.utils import get_logger

from svp.common import swift_trainer
from svp.neo import settings
from svp.neo.configuration import IMG_CONTEXT, IMG_END, IMG_START, NEOChatConfig
from svp.neo.hf import register_auto_classes
from svp.neo.image import flatten_patches, image_max_pixels, preprocess
from svp.neo.loss import sample_weights

logger = get_logger()

MODEL_TYPE = "neo"
TEMPLATE = "neo"
ARCH = "neo"


# ----------------------------------------------------------------------------- model
class NeoLoader(ModelLoader):
    """Loads a NEO checkpoint (``build_neo.py`` output, a stage's output or a released one)."""

    default_trust_remote_code = False

    def get_config(self, model_dir: str):
        return NEOChatConfig.from_pretrained(model_dir)

    def get_processor(self, model_dir: str, config):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        fields = {IMG_CONTEXT: "img_context_token_id", IMG_START: "img_start_token_id",
                  IMG_END: "img_end_token_id"}
        got = {t: tokenizer.convert_tokens_to_ids(t) for t in fields}
        for token, field in fields.items():  # released configs carry no img_end_token_id
            if getattr(config, field) is None:
                setattr(config, field, got[token])
        want = {t: getattr(config, f) for t, f in fields.items()}
        if got != want:
            raise ValueError(f"{model_dir}: the tokenizer's image token ids {got} differ from "
                             f"the config's {want}; a NEO checkpoint is made with "
                             "data_tools/build_neo.py from a Qwen3 LLM")
        return tokenizer

    def get_model(self, model_dir: str, config, processor, model_kwargs):
        from svp.neo.modeling import NEOChatModel

        attn = getattr(config, "_attn_implementation", None)
        if attn and "flash" in str(attn):
            raise ValueError("NEO cannot use flash attention (q/k are 2*head_dim wide, v is "
                             "head_dim; images attend bidirectionally): drop --attn_impl")
        model = NEOChatModel.from_pretrained(model_dir, config=config, **model_kwargs)
        model.attn_backend = settings.load().attn
        return model


# ----------------------------------------------------------------------------- template
class NeoTemplate(Template):
    """ChatML without a default system; images as NEO's native patches."""

    placeholder_tokens = [IMG_CONTEXT]
    # ms-swift's trainer otherwise claims every model takes loss kwargs: the HF Trainer then
    # counts the supervised tokens of all accumulated micro-batches, ms-swift rescales each
    # loss by its share and the GA division is skipped, a token-weighted mean. Upstream
    # averages the per-row weighted losses over micro-batches and ranks.
    model_accepts_loss_kwargs = False

    def replace_tag(self, media_type, index, inputs):
        if media_type != "image":
            raise ValueError(f"NEO takes images only, not {media_type}")
        return [IMG_START, [-100], IMG_END]

    @staticmethod
    def _add_default_tags(inputs) -> None:
        """Upstream prepends ``<image>\\n`` (with the newline) to a single-image sample
        whose text has no tag; several untagged images get ms-swift's default."""
        contents = [m["content"] for m in inputs.messages]
        if (len(inputs.images) == 1 and inputs.messages
                and inputs.messages[0]["role"] == "user"
                and all(isinstance(c, str) and "<image>" not in c for c in contents if c)):
            inputs.messages[0]["content"] = "<image>\n" + (inputs.messages[0]["content"] or "")
            return
        Template._add_default_tags(inputs)

    def _image_bounds(self, n_images: int) -> tuple[int, int]:
        lo, hi = settings.load().pixel_bounds(self.config.vision_config)
        return lo, image_max_pixels(n_images, lo, hi, self.is_training)

    def _encode(self, inputs) -> dict[str, Any]:
        encoded = super()._encode(inputs)
        input_ids, labels = encoded["input_ids"], encoded["labels"]
        idx = findall(input_ids, -100)
        images = inputs.images or []
        if len(idx) != len(images):
            raise ValueError(f"{len(images)} images but {len(idx)} <image> tags")
        if not images:
            return encoded
        vision = self.config.vision_config
        lo, hi = self._image_bounds(len(images))
        pixels, grids, counts = [], [], []
        for image in images:
            x = preprocess(image, lo, hi, vision.factor, training=self.is_training)
            patches, (gh, gw) = flatten_patches(x, vision.patch_size)
            pixels.append(patches)
            grids.append((gh, gw))
            counts.append((gh // vision.merge) * (gw // vision.merge))
        ctx = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        input_ids, labels, loss_scale = self._extend_tokens(
            input_ids, labels, encoded.get("loss_scale"), idx, lambda i: [ctx] * counts[i])
        encoded.update(input_ids=input_ids, labels=labels, loss_scale=loss_scale)
        encoded["pixel_values"] = torch.cat(pixels).to(self.model_info.torch_dtype)
        encoded["image_grid_hw"] = torch.tensor(grids, dtype=torch.long)
        return encoded

    def _data_collator_mm_data(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        res = {}
        pixels = [b["pixel_values"] for b in batch if b.get("pixel_values") is not None]
        if pixels:
            res["pixel_values"] = torch.cat(pixels)
            res["image_grid_hw"] = torch.cat([b["image_grid_hw"] for b in batch
                                              if b.get("image_grid_hw") is not None])
        return res

    def _data_collator(self, batch: list[dict[str, Any]], *, padding_to=None) -> dict[str, Any]:
        if not self.is_training:
            return super()._data_collator(batch, padding_to=padding_to)
        if self.padding_free or self.packing:
            raise ValueError("NEO packs each micro-batch into one row in its own collator; "
                             "drop --packing / --padding_free")
        return self.pack(batch)

    dropped = 0  # samples left out of rows by SVP_NEO_ROW_LENGTH, this process

    def pack(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        """One row: the samples concatenated, their boundaries, and upstream's per-token
        loss weights (``per_device_train_batch_size`` = samples per row). With a row cap,
        the samples after the first that would overflow it are left out, as upstream does,
        but counted and reported; the first sample always stays (``--max_length`` caps it)."""
        cfg = settings.load()
        reduction, cap = cfg.loss_reduction, cfg.row_length
        total = 0
        kept = []
        for b in batch:
            if kept and cap and total + len(b["input_ids"]) > cap:
                continue
            kept.append(b)
            total += len(b["input_ids"])
        if len(kept) < len(batch):
            NeoTemplate.dropped += len(batch) - len(kept)
            logger.warning(f"neo: {len(batch) - len(kept)} of {len(batch)} samples did not fit "
                           f"the {cap}-token row (SVP_NEO_ROW_LENGTH) and were left out; "
                           f"{NeoTemplate.dropped} so far in this process")
        batch = kept
        ids, labels, weights, bounds = [], [], [], [0]
        for b in batch:
            scale = b.get("loss_scale")
            if scale is not None and any(s not in (0, 1) for s in scale):
                raise ValueError("NEO weighs its loss itself (SVP_NEO_LOSS_REDUCTION); a "
                                 "--loss_scale with weights other than 0/1 is not supported")
            lab = b["labels"] if b.get("labels") is not None else [-100] * len(b["input_ids"])
            ids += list(b["input_ids"])
            labels += list(lab)
            weights += sample_weights(list(lab), reduction)
            bounds.append(len(ids))
        res = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
               "loss_weight": torch.tensor([weights], dtype=torch.float32),
               "seq_boundaries": torch.tensor(bounds, dtype=torch.int32)}
        channels = [b.get("channel") for b in batch]
        if any(channels):
            res["channel"] = channels
        res.update(self._data_collator_mm_data(batch))
        return res


def register() -> None:
    """Idempotent registration of the model arch, model type ``neo`` and template ``neo``."""
    settings.load()  # validated and logged at start-up
    swift_trainer.register()
    register_auto_classes()
    if ARCH not in MODEL_ARCH_MAPPING:
        register_model_arch(MultiModelKeys(ARCH, language_model="language_model",
                                           vision_tower="vision_model"))
    if TEMPLATE not in TEMPLATE_MAPPING:
        register_template(ChatmlTemplateMeta(TEMPLATE, default_system=None,
                                             template_cls=NeoTemplate))
    if MODEL_TYPE not in MODEL_MAPPING:
        register_model(ModelMeta(MODEL_TYPE, [], NeoLoader, template=TEMPLATE, model_arch=ARCH,
                                 architectures=["NEOChatModel"], is_multimodal=True,
                                 tags=["vision"]))
