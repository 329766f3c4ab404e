"""ms-swift side of CoVT: the ``covt_qwen2_5_vl`` model type that owns the heads, the
``qwen2_5_vl_covt`` template that stages the data and adds the expert losses, and the
``covt_stage`` callback that lets the template follow the trainer's global step.

Settings: :mod:`svp.covt.settings` (``SVP_COVT_*``), read by ``swift sft|export|infer`` and
the data tools alike.

Rows are ordinary LLaVA conversations; the template rewrites the first question/answer as
the stage of the current step prescribes (:func:`svp.covt.tokens.build_turn`). Rows that
already hold ``<|anchor_start|>`` are trained as written.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from swift.callbacks import TrainerCallback, callbacks_map
from swift.model import ModelArch, ModelMeta, register_model
from swift.model.models.qwen import Qwen2_5VLLoader
from swift.model.register import MODEL_MAPPING
from swift.optimizers import OptimizerCallback, optimizers_map
from swift.template.register import TEMPLATE_MAPPING, register_template
from swift.template.templates.qwen import Qwen2_5VLTemplate
from swift.utils import get_logger

from svp.common import swift_new_rows, swift_trainer
from svp.common.io import write_atomic
from svp.common.swift_vocab import grow_vocabulary, growth_message
from svp.covt import settings
from svp.covt.cache import TargetCache, image_key, split_batch
from svp.covt.compute import AuxResult, aux_factor, covt_losses, idle_heads_term
from svp.covt.experts import build_experts
from svp.covt.heads import CovtHeads
from svp.covt.settings import CovtSettings
from svp.covt.tokens import (
    ANCHOR_START,
    SPECS,
    STAGES,
    TAG_TOKENS,
    UPSTREAM_SIDE,
    build_turn,
)

logger = get_logger()
MODEL_TYPE = "covt_qwen2_5_vl"
TEMPLATE = "qwen2_5_vl_covt"
#: upstream's chat frame: a newline before every <|im_end|> (its data.py writes
#: "<|im_start|>{role}\n{content}\n<|im_end|>\n", the answer's final newline trained)
TEMPLATE_UPSTREAM_FRAME = "qwen2_5_vl_covt_upstream"
CALLBACK = "covt_stage"
OPTIMIZER = "covt"
HEADS_ATTR = "covt_heads"


def head_shapes(config: CovtSettings) -> dict:
    """The heads' shapes: asked of the stand-in experts (built once, shared with the loss),
    or read from the real checkpoints' configs (cheap) without loading the experts."""
    if config.backend == "standin":
        return {n: e.shape() for n, e in _experts(config).items()}
    from svp.covt.real import real_head_shapes

    return real_head_shapes(config.thought, config.checkpoints)


# ----------------------------------------------------------------------------- heads on the model
HEADS_FILE = "covt/heads.safetensors"  # beside the weights, not among them (see below)


def heads_meta(config: CovtSettings) -> dict[str, str]:
    """What the saved heads were built for; a load under other settings is refused."""
    return {"experts": ",".join(config.thought.experts),
            "counts": ",".join(str(c) for c in config.thought.counts),
            "backend": config.backend, "sam_positions": config.sam_positions}


def _check_heads_meta(path: Path, config: CovtSettings) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        saved = f.metadata() or {}
    now = heads_meta(config)
    wrong = [f"{k}: saved {saved[k]!r}, now {now[k]!r}" for k in now
             if k in saved and saved[k] != now[k]]
    if wrong:
        raise ValueError(f"{path} holds CoVT heads trained with other settings ("
                         f"{'; '.join(wrong)}): set SVP_COVT_EXPERTS / SVP_COVT_BACKEND / "
                         f"SVP_COVT_SAM_POSITIONS as in training")


def _checkpoint_heads(model_dir: str, config: CovtSettings) -> dict[str, torch.Tensor]:
    """The heads saved with a model folder (full tuning / merged LoRA): ``covt/heads.safetensors``
    (its settings checked against ``config``), or ``covt_heads.*`` tensors inside the weights
    (folders merged before the side file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    side = Path(model_dir) / HEADS_FILE
    if side.is_file():
        _check_heads_meta(side, config)
        return load_file(str(side))
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                if k.startswith(HEADS_ATTR + "."):
                    out[k[len(HEADS_ATTR) + 1:]] = st.get_tensor(k)
    return out


def _write_heads(save_directory: str, heads: dict[str, torch.Tensor], config: CovtSettings
                 ) -> Path:
    """The heads as ``covt/heads.safetensors`` (a subfolder: vLLM's loader reads every
    top-level ``*.safetensors`` of a folder without an index), atomically."""
    from safetensors.torch import save_file

    from svp.common.io import atomic_path

    path = Path(save_directory) / HEADS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = heads_meta(config)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, str(tmp),
                  metadata=meta)
    return path


def _save_heads_beside(model, config: CovtSettings) -> None:
    """Make ``model.save_pretrained`` (full-tuning checkpoints, ``swift export --merge_lora``)
    write a plain Qwen2.5-VL folder: stock transformers and vLLM load it strictly (CoVT
    issues #8, #24), and the heads go to :data:`HEADS_FILE`, which this model type and
    ``covt_decode.py`` read. Adapter checkpoints are untouched (peft keeps the heads as
    ``modules_to_save``)."""
    original = model.save_pretrained
    if getattr(original, "_svp_heads_beside", False):
        return
    prefix = HEADS_ATTR + "."

    def save_pretrained(save_directory, *args, state_dict=None, is_main_process=True, **kw):
        full = model.state_dict() if state_dict is None else state_dict
        heads = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
        rest = {k: v for k, v in full.items() if not k.startswith(prefix)}
        result = original(save_directory, *args, state_dict=rest,
                          is_main_process=is_main_process, **kw)
        if heads and is_main_process:
            path = _write_heads(save_directory, heads, config)
            logger.info(f"covt: {len(heads)} head tensors written to {path}; the weights "
                        "beside it are a plain Qwen2.5-VL checkpoint")
        return result

    save_pretrained._svp_heads_beside = True
    model.save_pretrained = save_pretrained


def attach_heads(model, model_dir: str, config: CovtSettings) -> CovtHeads:
    """Give ``model`` its heads (a child module, so tuners train and checkpoints save it),
    restoring them from ``model_dir`` when it holds a CoVT checkpoint."""
    cfg = model.config
    hidden = getattr(getattr(cfg, "text_config", None), "hidden_size", None) or cfg.hidden_size
    emb = model.get_input_embeddings().weight
    heads = CovtHeads(hidden, head_shapes(config), sam_positions=config.sam_positions)
    saved = _checkpoint_heads(model_dir, config)
    if saved:
        try:
            heads.load_state_dict(saved, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{model_dir} holds CoVT heads that do not fit experts "
                             f"{config.thought.experts} with counts {config.thought.counts} "
                             f"(SVP_COVT_EXPERTS / SVP_COVT_BACKEND differ from training?): "
                             f"{exc}") from exc
        logger.info(f"covt: restored {len(saved)} head tensors from {model_dir}")
    else:
        logger.info(f"covt: new heads for {', '.join(config.thought.experts)} "
                    f"({sum(p.numel() for p in heads.parameters()) / 1e6:.2f} M parameters)")
    setattr(model, HEADS_ATTR, heads.to(device=emb.device, dtype=emb.dtype))
    _save_heads_beside(model, config)
    return heads


class CovtQwen2_5VLLoader(Qwen2_5VLLoader):
    """Stock Qwen2.5-VL loading, then the heads and the visual-thought tokens."""

    def get_model(self, model_dir: str, *args, **kwargs):
        model = super().get_model(model_dir, *args, **kwargs)
        attach_heads(model, model_dir, settings.load())
        return model

    def _add_new_special_tokens(self, model, processor, config):
        super()._add_new_special_tokens(model, processor, config)
        covt = settings.load()
        tokens = covt.thought.new_tokens()  # anchors special, pads not
        groups = [(tokens[:2], True), (tokens[2:], False)]
        if covt.tags == "tokens":  # upstream: the reasoning tags as ordinary added tokens
            groups.append((list(TAG_TOKENS), False))
        summary = grow_vocabulary(self, model, processor, config, groups, seed=1)
        what = "visual-thought tokens" + (" and reasoning tags" if covt.tags == "tokens" else "")
        if message := growth_message(summary, what):
            logger.info(f"covt: {message}")


def squash_upstream(image):
    """Upstream's training picture (``SVP_COVT_RESIZE=448``): qwen-vl-utils' ``fetch_image``
    with ``resized_width/height`` 448, i.e. RGB and PIL's default (bicubic) resize to 448 x 448,
    whatever the aspect ratio. Paths are left alone (the template loads pictures first)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        return image
    return image.convert("RGB").resize((UPSTREAM_SIDE, UPSTREAM_SIDE), Image.BICUBIC)


# ----------------------------------------------------------------------------- stage clock
def read_clock(path: str | None) -> int:
    """The global step the callback last published (0 before training starts). A clock file
    that exists but cannot be read is an error, never a silent step 0."""
    if not path:
        return 0
    clock = Path(path)
    if not clock.exists():
        return 0
    text = clock.read_text().strip()
    try:
        return int(text)
    except ValueError as exc:
        raise RuntimeError(f"covt: stage clock {path} holds {text!r}, not a step") from exc


class CovtStageCallback(TrainerCallback):
    """Publishes the trainer's global step (restored on resume) to the template's encoder,
    which may run in dataloader workers: a small file whose path the template carries (set
    here before the workers start, so each worker's copy of the template has it)."""

    def _publish(self, state) -> None:
        path = Path(self.args.output_dir) / ".covt_step"
        write_atomic(path, str(state.global_step))
        template = getattr(self.trainer, "template", None)
        if template is not None:
            template.clock_path = str(path)

    def on_train_begin(self, args, state, control, **kwargs):
        self._publish(state)
        logger.info(f"covt: schedule starts at global step {state.global_step} "
                    f"(stage {settings.load().schedule.stage(state.global_step)})")

    def on_step_end(self, args, state, control, **kwargs):
        self._publish(state)


# ----------------------------------------------------------------------------- template
class Qwen2_5VLCovtTemplate(Qwen2_5VLTemplate):
    """Stages the rows, carries each sample's image / cached targets to the loss, and adds
    the expert losses to the LM loss (scaled like it), logging each one."""

    stage_rows = True  # False: encode rows as written (replaying a generated answer)
    clock_path: str | None = None  # set by the covt_stage callback

    @cached_property
    def covt(self) -> CovtSettings:
        return settings.load()

    @cached_property
    def pad_ids(self) -> dict[str, int]:
        ids = {}
        for name in self.covt.thought.experts:
            tid = self.tokenizer.convert_tokens_to_ids(SPECS[name].pad)
            if tid is None or tid == self.tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer lacks {SPECS[name].pad}: load the model with "
                                 f"--model_type {MODEL_TYPE} and --external_plugins "
                                 f"plugins/covt.py")
            ids[name] = tid
        return ids

    @cached_property
    def target_cache(self) -> TargetCache | None:
        """Reader only (this may run in dataloader workers, which must not load experts);
        the fingerprints are checked where the experts live, in the training step."""
        if not self.covt.cache:
            return None
        cache = TargetCache(self.covt.cache, {})
        cache.check_meta(create=False)
        return cache

    @cached_property
    def pad_id_set(self) -> frozenset[int]:
        return frozenset(self.pad_ids.values())

    # -- data
    def _stage_messages(self, inputs) -> str | None:
        """Rewrite the first question/answer for the current stage; returns the stage."""
        msgs = inputs.messages
        if any(ANCHOR_START in str(m.get("content", "")) for m in msgs):
            return  # already staged by hand
        users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
        if not users or users[0] + 1 >= len(msgs) or msgs[users[0] + 1]["role"] != "assistant":
            return  # inference request: the model writes its own thought
        if not inputs.images:
            return  # no image, nothing for the experts to see
        u, a = msgs[users[0]], msgs[users[0] + 1]
        step = read_clock(self.clock_path)
        stage = self.covt.schedule.stage(step)
        q = str(u["content"])
        tags = q.count("<image>")
        q = "<image>" * tags + q.replace("<image>", "").lstrip("\n")
        rng = random.Random(zlib.crc32(f"{step}:{q}:{a['content']}".encode()))
        u["content"], a["content"] = build_turn(stage, q, str(a["content"]), self.covt.thought,
                                                rng)
        return stage

    def _encode(self, inputs):
        if self.is_training and (self.packing or self.padding_free):
            raise ValueError("CoVT cannot train on packed or padding-free batches: its losses "
                             "read one image and one group of thought tokens per row, and a "
                             "packed row holds several samples (only the first would be "
                             "supervised). Remove --packing / --padding_free.")
        if self.is_training and self.covt.turns == "first":
            first_pair_only(inputs)
        stage = self._stage_messages(inputs) if self.is_training and self.stage_rows else None
        image = inputs.images[0] if inputs.images else None  # the experts see the original
        if self.is_training and self.covt.resize == "448" and inputs.images:
            inputs.images = [squash_upstream(im) for im in inputs.images]
        encoded = super()._encode(inputs)
        ids = encoded.get("input_ids") or []
        # the losses' inputs, in training only: at inference a prompt may hold thought tokens
        # too (an answer being continued), and generate() refuses unknown keyword arguments
        if self.is_training and image is not None and not self.pad_id_set.isdisjoint(ids):
            extra = {"image": image, "targets": None, "stage": stage}
            if self.target_cache is not None:
                extra["targets"] = self.target_cache.load(image_key(image),
                                                          self.covt.thought.experts)
            encoded["covt"] = extra
        return encoded

    def _data_collator(self, batch, *, padding_to=None):
        samples = [b.get("covt") for b in batch]
        batch = [{k: v for k, v in b.items() if k != "covt"} for b in batch]
        res = super()._data_collator(batch, padding_to=padding_to)
        if any(e is not None for e in samples):
            res["covt"] = samples
        return res

    # -- loss
    def compute_sft_loss(self, model, inputs, num_items_in_batch=None, trainer=None):
        samples = inputs.pop("covt", None)
        step = trainer.state.global_step if trainer is not None else 0
        aux_on = samples is not None and self.covt.schedule.aux_on(step)
        if aux_on and "labels" not in inputs:
            raise ValueError("CoVT adds its losses to the model's LM loss; it cannot be used with "
                             "options that make the trainer compute the loss itself "
                             "(--loss_scale other than default, channel loss, DFT, sequence "
                             "parallel)")
        if self.covt.schedule.multi_stage and trainer is not None and not any(
                isinstance(cb, CovtStageCallback) for cb in trainer.callback_handler.callbacks):
            raise ValueError(f"SVP_COVT_SCHEDULE has several stages: add --callbacks {CALLBACK} "
                             f"so the data follows the global step (and resume continues it)")
        runtime = runtime_for(self.covt, model)
        runtime.pending = PendingBatch(inputs["input_ids"], samples if aux_on else None,
                                       self.pad_ids, self.covt.weights)
        try:
            outputs = super().compute_sft_loss(model, inputs, num_items_in_batch, trainer)
        finally:
            runtime.pending = None
        result, aux = runtime.last, outputs.get("covt_aux")
        if aux is not None and outputs.loss is not None:
            factor = 1.0 if trainer is None else _aux_factor(trainer, num_items_in_batch)
            outputs.loss = outputs.loss + factor * aux.to(outputs.loss.device)
        if result is not None:
            runtime.report(result, samples or [], trainer, model.training)
        return outputs


def _aux_factor(trainer, num_items_in_batch) -> float:
    """Scale the aux loss as the trainer scales the LM loss (gradient accumulation, tokens
    averaged across devices): see :func:`svp.covt.compute.aux_factor`."""
    scaled = trainer.loss_is_scaled_for_ga
    if scaled is None:
        scaled = (trainer.model_accepts_loss_kwargs and num_items_in_batch is not None
                  ) or trainer.compute_loss_func is not None
    averaged = bool(getattr(trainer.args, "average_tokens_across_devices", False)
                    and trainer.model_accepts_loss_kwargs and num_items_in_batch is not None)
    return aux_factor(bool(scaled), trainer.current_gradient_accumulation_steps, averaged,
                      trainer.accelerator.num_processes)


_EXPERTS: dict = {}


def _experts(config: CovtSettings) -> dict:
    """The experts of these settings, built once per process (frozen, shared by every
    model and by the head-shape query)."""
    key = (config.backend, config.thought, tuple(sorted(config.checkpoints.items())),
           config.dino_input, config.depth_input)
    if key not in _EXPERTS:
        _EXPERTS[key] = build_experts(config.thought, config.backend, config.checkpoints,
                                      config.dino_input, config.depth_input)
    for expert in _EXPERTS[key].values():
        expert.empty_masks = config.sam_empty
    return _EXPERTS[key]


@dataclass
class PendingBatch:
    """What the forward hook needs from the template for one micro-batch."""

    input_ids: torch.Tensor
    samples: list | None          # per row: {"image", "targets", "stage"} or None; None: no aux
    pad_ids: dict[str, int]
    weights: dict[str, float]


class CovtRuntime:
    """Per model: the heads, the experts, and the model's ``forward`` (of the module that owns
    the heads) extended on the instance, so the heads and their losses run *inside* the
    model's forward, as upstream's do.

    That is what the wrappers need: DDP traces the parameters a forward used from its
    outputs, and ZeRO-3 gathers a module's parameters only while the engine's forward runs.
    It has to be the method itself, not a forward hook: peft's tuner calls the inner model's
    ``.forward`` directly, so hooks on that module never run. After the stock forward it
    reads the final norm's output (captured by a hook on the norm, which is called
    normally), computes the expert losses of the pending batch, adds ``0 x`` every head it
    did not use (so every rank uses every head parameter in every step), and returns the sum
    as ``outputs["covt_aux"]``;
    :meth:`Qwen2_5VLCovtTemplate.compute_sft_loss` adds it to the LM loss, scaled as the
    trainer scales that.
    """

    def __init__(self, config: CovtSettings, model):
        self.config = config
        self.hidden = None
        self.pending: PendingBatch | None = None
        self.last = None  # the AuxResult of the latest forward with a pending batch
        found = next(((n, m) for n, m in model.named_modules()
                      if n.split(".")[-1] == HEADS_ATTR), None)
        if found is None:
            raise ValueError(f"the model has no {HEADS_ATTR}: load it with --model_type "
                             f"{MODEL_TYPE}")
        name, self.heads = found  # outermost: peft's ModulesToSaveWrapper under LoRA
        self.owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        norms = [m for n, m in self.owner.named_modules() if n.endswith("language_model.norm")]
        if not norms:
            raise ValueError("covt: could not find the language model's final norm")
        norms[0].register_forward_hook(self._capture)
        stock_forward = self.owner.forward

        # keeps the stock signature: generate() checks its keyword arguments against it
        @functools.wraps(stock_forward)
        def forward(*args, **kwargs):
            return self._after_forward(stock_forward(*args, **kwargs))

        self.owner.forward = forward
        self.experts = _experts(config)
        if config.cache:  # refuse targets made by other experts before the first update
            TargetCache(config.cache, {n: e.fingerprint() for n, e in self.experts.items()}
                        ).check_meta(create=False)
        self.logged_skips: Counter = Counter()

    def _capture(self, module, args, output):
        self.hidden = output

    def _after_forward(self, output):
        batch = self.pending
        if batch is None:  # generation, or a forward the template did not start (the
            return output  # decoding tool reads ``hidden`` itself)
        hidden = self.hidden
        self.pending, self.hidden = None, None
        if hidden is None:
            raise RuntimeError("covt: the language model's final norm did not run")
        result = AuxResult()
        if batch.samples is not None:
            targets = self.targets(batch.samples, hidden.device)
            result = covt_losses(hidden, batch.input_ids, batch.pad_ids, self.heads,
                                 self.experts, targets, batch.weights)
        self.last = result
        aux = result.total
        if torch.is_grad_enabled():
            idle = idle_heads_term(self.heads, [n for n in self.experts if n not in result.parts],
                                   hidden)
            if idle is not None:
                aux = idle if aux is None else aux + idle
        if aux is None:
            return output
        return _with_aux_field(type(output))(**output, covt_aux=aux)

    def targets(self, samples, device) -> list[dict | None]:
        """Each sample's targets per expert: read whole from a full cache entry, completed
        from a compact one (the searched keys read, the forward pass run), or computed."""
        out: list[dict | None] = [None if e is None else {} for e in samples]
        for name, expert in self.experts.items():
            whole, known, todo = [], [], []
            for i, e in enumerate(samples):
                if e is None:
                    continue
                cached = (e.get("targets") or {}).get(name) or {}
                if all(k in cached for k in expert.keys):
                    whole.append(i)
                    out[i][name] = cached
                elif expert.searched and all(k in cached for k in expert.searched):
                    known.append(i)
                else:
                    todo.append(i)
            with torch.no_grad():
                if known:
                    per = split_batch(expert.complete([samples[i]["image"] for i in known],
                                                      [samples[i]["targets"][name]
                                                       for i in known]), len(known))
                    for i, t in zip(known, per, strict=True):
                        out[i][name] = t
                if todo:
                    per = split_batch(expert.targets([samples[i]["image"] for i in todo]),
                                      len(todo))
                    for i, t in zip(todo, per, strict=True):
                        out[i][name] = t
        return out

    def report(self, res, samples, trainer, training: bool) -> None:
        for reason, n in res.skipped.items():
            self.logged_skips[reason] += n
            if self.logged_skips[reason] in (n, 100, 10000):
                logger.warning(f"covt: {self.logged_skips[reason]} samples skipped so far: "
                               f"{reason}")
        if trainer is None:
            return
        metrics = trainer.custom_metrics["train" if training else "eval"]
        present = [e for e in samples if e is not None]
        if present:  # share of samples whose targets came from the cache
            hits = [float(e.get("targets") is not None) for e in present]
            metrics["covt_cached"].update(torch.tensor(hits))
        stages = [STAGES.index(e["stage"]) for e in present if e.get("stage")]
        if stages:  # which stage the batch was built for (0 understanding .. 3 efficient)
            metrics["covt_stage"].update(torch.tensor(stages, dtype=torch.float32))
        for name, loss in res.parts.items():
            metrics[f"covt_{name}"].update(loss.detach().float())
        if res.total is not None:
            metrics["covt_aux"].update(res.total.detach().float())


@functools.cache
def _with_aux_field(output_cls: type) -> type:
    """``output_cls`` plus a ``covt_aux`` field. DDP rebuilds a forward's output as
    ``type(output)(**fields)``, so the aux loss must be a declared field, not an added key."""
    return dataclasses.make_dataclass(f"{output_cls.__name__}WithCovtAux",
                                      [("covt_aux", torch.Tensor | None, None)],
                                      bases=(output_cls,))


_RUNTIMES: dict[int, CovtRuntime] = {}


def runtime_for(config: CovtSettings, model) -> CovtRuntime:
    """The runtime of ``model`` (any wrapper of it), created once per model that owns heads."""
    key = id(model)
    if key not in _RUNTIMES:
        runtime = next((r for r in _RUNTIMES.values()
                        if any(m is r.heads for m in model.modules())), None)
        _RUNTIMES[key] = runtime or CovtRuntime(config, model)
    return _RUNTIMES[key]


@torch.no_grad()
def decode_answer(model, template, image, messages: list[dict], answer: str
                  ) -> tuple[dict[str, dict], list[str]]:
    """Replay ``messages`` and the model's ``answer`` through ``model`` as written (teacher
    forced) and decode each expert's visual-thought tokens with the heads and the expert's
    decoder (:func:`svp.covt.decode.decode_sequence`). Returns the results by expert and the
    experts the answer holds no complete token group for.

    Encodes with a shallow copy of ``template`` in training mode (the exchange exactly as
    written, no staging), so a template an inference engine is using keeps its own mode."""
    import copy

    from svp.covt.decode import decode_sequence

    replay = copy.copy(template)
    replay.model = model  # its position ids come from this model (not a dummy it would load)
    replay.set_mode("train")
    replay.stage_rows = False
    enc = replay.encode({"messages": [*messages, {"role": "assistant", "content": answer}],
                         "images": [image]})
    enc.pop("covt", None)  # the experts run below, on the picture itself
    batch = replay.data_collator([enc])
    runtime = runtime_for(replay.covt, model)
    device = next(model.parameters()).device
    model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()
             if k not in ("labels", "text_position_ids", "covt")})
    hidden, runtime.hidden = runtime.hidden, None
    targets = {n: e.targets([image]) for n, e in runtime.experts.items()}
    results = decode_sequence(hidden, batch["input_ids"].to(device), replay.pad_ids,
                              runtime.heads, runtime.experts, targets)
    return results, [n for n in runtime.experts if n not in results]


def first_pair_only(inputs) -> None:
    """Upstream's training rows: the first question/answer pair only (its data.py stops at the
    second pair); the pictures tagged in the dropped turns go with them. Rows whose pictures
    are not tagged (ms-swift puts them in front of the first turn) keep them all."""
    msgs = inputs.messages
    users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    if not users or users[0] + 2 >= len(msgs):
        return
    kept = msgs[:users[0] + 2]

    def tags(messages) -> int:
        return sum(str(m.get("content", "")).count("<image>") for m in messages)

    if tags(msgs) == len(inputs.images or []):
        inputs.images = list(inputs.images)[:tags(kept)]
    inputs.messages = kept


class CovtOptimizer(OptimizerCallback):
    """``--optimizer covt``: upstream's groups (svp/covt/optim.py), the heads' projections at
    ``SVP_COVT_HEAD_LR``, everything else at ``--learning_rate``; ms-swift's way to give parts
    of a model their own rate (as its ``multimodal`` optimizer does for the ViT)."""

    def create_optimizer(self, model=None):
        from transformers.trainer import Trainer as HfTrainer

        from svp.covt.optim import is_head_projection, param_groups

        args = self.args
        model = model if model is not None else self.trainer.model
        decay = set(HfTrainer.get_decay_parameter_names(None, model))
        head_lr = settings.load().head_lr
        groups = param_groups(model.named_parameters(), decay, args.learning_rate, head_lr,
                              args.weight_decay)
        n_head = sum(is_head_projection(n) for n, p in model.named_parameters()
                     if p.requires_grad)
        logger.info(f"covt optimizer: {n_head} head tensors at lr {head_lr:g} "
                    f"(SVP_COVT_HEAD_LR), the rest at {args.learning_rate:g}")
        optimizer_cls, kwargs = HfTrainer.get_optimizer_cls_and_kwargs(args, model)
        return optimizer_cls(groups, **kwargs)


def register() -> None:
    """Idempotent registration of the model type, template, callback and optimizer."""
    from dataclasses import replace

    settings.load()  # validated and logged at start-up
    swift_trainer.register()
    swift_new_rows.register()  # --tuner_type lora_new_rows: LoRA + the new tokens' rows

    stock = TEMPLATE_MAPPING["qwen2_5_vl"]
    register_template(replace(stock, template_type=TEMPLATE,
                              template_cls=Qwen2_5VLCovtTemplate), exist_ok=True)
    register_template(replace(
        stock, template_type=TEMPLATE_UPSTREAM_FRAME, template_cls=Qwen2_5VLCovtTemplate,
        prompt=["<|im_start|>user\n{{QUERY}}\n<|im_end|>\n<|im_start|>assistant\n"],
        chat_sep=["\n<|im_end|>\n"], suffix=["\n<|im_end|>\n"],
        system_prefix=["<|im_start|>system\n{{SYSTEM}}\n<|im_end|>\n"],
        default_system="You are a helpful assistant."), exist_ok=True)
    if MODEL_TYPE not in MODEL_MAPPING:
        register_model(ModelMeta(MODEL_TYPE, [], CovtQwen2_5VLLoader, template=TEMPLATE,
                                 model_arch=ModelArch.qwen2_vl,
                                 architectures=["Qwen2_5_VLForConditionalGeneration"],
                                 is_multimodal=True, tags=["vision"]))
    callbacks_map[CALLBACK] = CovtStageCallback
    optimizers_map.setdefault(OPTIMIZER, CovtOptimizer)
