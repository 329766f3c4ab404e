"""What every ms-swift training run of ours gets: multi-process runs that are really one
job, a way to prove it, and resumes that really resume.

Seven pieces, installed by every entry's ``register()``:

- **The one-job guard.** A run started with several processes (``NPROC_PER_NODE``/``NNODES``
  through torchrun) whose trainer is not distributed trains every rank alone: on a machine
  without a GPU, transformers does that silently unless ``--use_cpu true`` is given, and the
  ranks end with different weights while the run "succeeds". The guard compares the launched
  world size with the trainer's and stops before the first step, saying what to add.
- **The ``svp_rank_check`` callback** (``--callbacks svp_rank_check``). At the end of
  training every rank hashes each trainable tensor (gathered first under ZeRO-3), writes
  ``<output_dir>/rank_check/rank<R>.json`` with the wrapper type, the world size and the
  hashes, and the ranks compare their hashes: a single differing tensor fails the run with its
  name. The tests read the same files and compare them themselves.
- **DeepSpeed on CPU processes.** With ``--use_cpu true`` transformers initialises the gloo
  process group itself but never DeepSpeed's communication layer, so ZeRO-3's ``zero.Init``
  (which runs while the model loads, before any engine exists) sees world size 1 and rejects
  the batch size (``train_batch_size ... 4 != 2 * 1 * 1``). Right after the devices are set
  up we hand DeepSpeed the process group that already exists (``deepspeed.comm`` adopts an
  initialised torch group). It only acts when ``use_cpu`` and ``deepspeed`` are both set.
- **Resuming a full fine-tune.** transformers 5 saves a Qwen-VL checkpoint in the legacy
  key layout (``model.layers.N``, ``visual.*``) and ``Trainer._load_from_checkpoint`` loads it
  with ``load_state_dict(..., strict=False)`` *without* converting the keys back: every weight
  is reported "missing" in a warning and stays at the base model's value while the optimizer
  and schedule continue, so a resumed full fine-tune silently restarts from the base model.
  We rename the keys with the model's own conversion mapping (the one ``from_pretrained``
  applies) before loading, and stop if a trainable tensor is still missing. LoRA checkpoints
  (adapters) and DeepSpeed checkpoints (the engine's own files) take other paths and are left
  to them.
- **A clean exit.** Neither ms-swift nor transformers destroys the process group at the end.
  A gloo group left to interpreter finalisation can abort a rank that finished
  (``terminate called without an active exception``, SIGABRT, the launcher reports the run
  failed): its C++ worker threads still hold work objects with Python references while the
  interpreter is torn down (the cause as described in pytorch PR 179291, which proposed the
  same remedy upstream and was withdrawn). We destroy the group in an ``atexit`` handler,
  while the interpreter is still whole, after a barrier: a rank that tore down while the
  other still ran rank-0-only work after training aborted the same way (seen once under
  ZeRO-3 in 15 two-process runs).
- **Replaced rows are counted.** A row ms-swift cannot encode (a picture the processor
  refuses, ...) is silently swapped for a random other one (``--strict false``, its
  default), with a traceback for the first ten only. Every such row is logged with the
  reason and its pictures and counted per process (:class:`CountedEncode`); rows dropped
  for ``--max_length`` are counted apart. A picture with samples wider than 8 bits, which
  ms-swift's RGB conversion would clip to near white, is refused where ms-swift loads it and
  so counted the same way. (The registry's validation finds these before training; this is
  what is left for plain data files.)
- **Logits only where a weighted loss reads them.** With a non-binary loss scale and more than
  one sample per device, ms-swift keeps the logits of a suffix of every row (from the earliest
  supervised token of any row), most of them prompt positions weighted zero. We keep the union
  of the supervised columns instead (:mod:`svp.common.supervised_logits`): the same loss over
  the same tokens, without the full-vocabulary rows nobody reads. The binary (stock) path and
  one-sample batches, which ms-swift already handles exactly, are left to it.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import torch
from swift.callbacks import TrainerCallback, callbacks_map
from swift.trainers.mixin import SwiftMixin
from swift.utils import get_dist_setting, get_logger, is_mp

from svp.common.io import write_atomic
from svp.common.supervised_logits import supervised_columns

logger = get_logger()
CALLBACK = "svp_rank_check"
_GUARD_MARK = "_svp_one_job_guard"


class NotOneJobError(RuntimeError):
    """Several processes were launched, but the trainer is not distributed."""


def check_one_job(args, launched: int | None = None) -> None:
    """Raise when torchrun launched several processes but ``args`` trains each alone: the
    trainer counts fewer processes, or counts them (a process group exists, e.g. with
    ``--ddp_backend gloo`` alone) without being in distributed mode, so nothing wraps the
    model."""
    from transformers.training_args import ParallelMode

    launched = get_dist_setting()[2] if launched is None else launched  # torchrun's WORLD_SIZE
    if launched <= 1:
        return
    if args.world_size != launched or args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise NotOneJobError(
            f"{launched} processes were launched but the trainer runs {args.world_size} in "
            f"{args.parallel_mode} mode: every rank would train alone and end with different "
            "weights. Without a GPU add `--use_cpu true --ddp_backend gloo` (the recipes do "
            "this by themselves); with GPUs, check that CUDA is visible to each process.")


def install_one_job_guard() -> None:
    """Check every ms-swift trainer right after it is built (idempotent)."""
    if getattr(SwiftMixin, _GUARD_MARK, False):
        return
    original = SwiftMixin.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        check_one_job(self.args)

    SwiftMixin.__init__ = __init__
    setattr(SwiftMixin, _GUARD_MARK, True)


def install_deepspeed_cpu_comm() -> None:
    """Wrap ``TrainingArguments._setup_devices`` (a cached property) so that, with
    ``--use_cpu true --deepspeed ...``, DeepSpeed adopts the gloo group (idempotent)."""
    from functools import cached_property

    from transformers import TrainingArguments

    prop = TrainingArguments.__dict__["_setup_devices"]
    if getattr(prop.func, _GUARD_MARK, False):
        return
    original = prop.func

    def _setup_devices(self):
        device = original(self)
        if self.use_cpu and self.deepspeed and torch.distributed.is_initialized():
            from deepspeed import comm

            if not comm.is_initialized():
                comm.init_distributed(dist_backend=self.ddp_backend or "gloo",
                                      auto_mpi_discovery=False)
        return device

    setattr(_setup_devices, _GUARD_MARK, True)
    wrapped = cached_property(_setup_devices)
    wrapped.__set_name__(TrainingArguments, "_setup_devices")
    TrainingArguments._setup_devices = wrapped


def checkpoint_state_dict(checkpoint: str | Path, model) -> dict | None:
    """A full checkpoint's tensors with the keys ``model`` uses (None when the folder holds no
    plain ``model.safetensors`` / sharded safetensors, e.g. an adapter or DeepSpeed one)."""
    from safetensors.torch import load_file
    from transformers import PreTrainedModel
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    folder = Path(checkpoint)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    if not isinstance(model, PreTrainedModel):
        return None
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    state = {}
    for name in files:
        for key, tensor in load_file(str(folder / name), device="cpu").items():
            state[rename_source_key(key, renamings, converters)[0]] = tensor
    return state


def install_full_resume_fix() -> None:
    """Load a full checkpoint under the model's own key names on resume (idempotent)."""
    from transformers import Trainer

    if getattr(Trainer._load_from_checkpoint, _GUARD_MARK, False):
        return
    original = Trainer._load_from_checkpoint

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.model if model is None else model
        state = checkpoint_state_dict(resume_from_checkpoint, target)
        if state is None:
            return original(self, resume_from_checkpoint, model)
        result = target.load_state_dict(state, strict=False)
        trainable = {n for n, p in target.named_parameters() if p.requires_grad}
        missing = sorted(trainable.intersection(result.missing_keys))
        if missing:
            raise RuntimeError(f"resume from {resume_from_checkpoint}: {len(missing)} trained "
                               f"tensors are not in the checkpoint: {missing[:5]}")
        logger.info(f"resume: loaded {len(state)} tensors from {resume_from_checkpoint} "
                    f"({len(result.missing_keys)} frozen ones not saved there)")

    setattr(_load_from_checkpoint, _GUARD_MARK, True)
    Trainer._load_from_checkpoint = _load_from_checkpoint


# ----------------------------------------------------------------------------- rank check
def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (bitwise: bf16/fp16 are hashed as their raw bits)."""
    t = tensor.detach().cpu().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def wrapper_name(trainer) -> str:
    """What the trainer trains through: ``DistributedDataParallel``, ``DeepSpeedEngine``,
    or the bare model class when nothing wraps it."""
    wrapped = getattr(trainer, "model_wrapped", None) or trainer.model
    return type(wrapped).__name__


def _gathered(params, zero3: bool):
    if not zero3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def rank_record(trainer) -> dict:
    """This rank's wrapper, world size and the digest of every trainable tensor."""
    model = trainer.model
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    zero3 = any(hasattr(p, "ds_id") for _, p in named)
    digests = {}
    with _gathered([p for _, p in named], zero3):
        for name, p in named:
            digests[name] = tensor_digest(p)
    rank = trainer.args.process_index
    return {"rank": rank, "world_size": trainer.args.world_size,
            "launched_world_size": get_dist_setting()[2], "wrapper": wrapper_name(trainer),
            "zero3": zero3, "parallel_mode": str(trainer.args.parallel_mode),
            "global_step": trainer.state.global_step, "trainable": digests}


def differing(records: list[dict]) -> list[str]:
    """Names of the tensors whose digests are not the same on every rank."""
    names = set().union(*(r["trainable"] for r in records))
    return sorted(n for n in names if len({r["trainable"].get(n) for r in records}) != 1)


class RankCheckCallback(TrainerCallback):
    """``--callbacks svp_rank_check``: prove at the end that all ranks hold the same model."""

    def on_train_end(self, args, state, control, **kwargs):
        record = rank_record(self.trainer)
        out = Path(args.output_dir) / "rank_check" / f"rank{record['rank']}.json"
        write_atomic(out, json.dumps(record, indent=1))
        records = [record]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            records = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(records, record)
        diff = differing(records)
        if diff:
            raise RuntimeError(f"svp_rank_check: {len(diff)} trainable tensors differ between "
                               f"ranks after step {state.global_step}: {diff[:5]}")
        logger.info(f"svp_rank_check: {len(record['trainable'])} trainable tensors identical on "
                    f"{len(records)} rank(s) ({record['wrapper']}, step {state.global_step})")


def destroy_process_group_at_exit() -> None:
    """The ``atexit`` handler: tear down an initialised process group (no-op otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        # every rank reaches the teardown before any destroys its group: a rank that tears
        # down while another still runs rank-0-only work or a last collective can abort
        # ("terminate called without an active exception") although training succeeded
        if dist.get_world_size() > 1:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=EXIT_BARRIER_S))
            else:
                dist.barrier()
    except Exception as exc:  # noqa: BLE001 - a rank died: tear down anyway
        logger.warning(f"svp: the exit barrier failed ({exc!r}); tearing down anyway")
    try:
        dist.destroy_process_group()
        logger.debug("svp: process group destroyed at exit")
    except Exception as exc:  # noqa: BLE001 - exiting anyway; say why it was not clean
        logger.warning(f"svp: destroying the process group at exit failed: {exc!r}")


def install_clean_exit() -> None:
    """Register :func:`destroy_process_group_at_exit` once per process."""
    global _exit_registered
    if not _exit_registered:
        atexit.register(destroy_process_group_at_exit)
        _exit_registered = True


_exit_registered = False
EXIT_BARRIER_S = 300  # how long a finished rank waits at exit for the others
_LOGITS_MARK = "_svp_supervised_logits"


def install_supervised_logits() -> None:
    """Weighted losses on several samples per device score only the supervised columns."""
    if getattr(SwiftMixin, _LOGITS_MARK, False):
        return
    original = SwiftMixin.prepare_logits_to_keep

    def prepare_logits_to_keep(self, inputs):
        labels, scale = inputs.get("labels"), inputs.get("loss_scale")
        if (scale is None or labels is None or labels.shape[0] == 1 or is_mp()
                or self.template.sequence_parallel_size > 1
                or self.args.tuner_backend == "unsloth"):
            return original(self, inputs)
        columns = supervised_columns(labels, scale)
        if columns is None:
            return original(self, inputs)
        inputs["labels"], inputs["loss_scale"], inputs["logits_to_keep"] = columns

    SwiftMixin.prepare_logits_to_keep = prepare_logits_to_keep
    setattr(SwiftMixin, _LOGITS_MARK, True)


def keep_row_column(name: str) -> None:
    """Keep a dataset column through ms-swift's loading (idempotent). ms-swift keeps only its
    standard columns (``--remove_unused_columns true``, the SFT default) before the template
    sees a row; a column a plugin's template reads from ``inputs.extra_kwargs`` must be one of
    them. The template still leaves it out of the encoded batch."""
    from swift.dataset.preprocessor.core import RowPreprocessor

    if name not in RowPreprocessor.standard_keys:
        RowPreprocessor.standard_keys.append(name)


class FatalRowError(ValueError):
    """A row error that is the data's or the run's, not the row's: every row would fail the
    same way (data converted for another model, say). ms-swift would replace each failing row
    with another failing one and then stop deep in the dataloader; :class:`CountedEncode`
    turns it into :class:`StopTraining` at the first row instead."""


class StopTraining(BaseException):
    """Raised through ms-swift's row-replacement loop (which catches ``Exception``): the run
    stops with the message of the :class:`FatalRowError` that caused it."""


class CountedEncode:
    """ms-swift's encode function, counting the rows it fails on. ms-swift then trains on a
    random other row in their place (``--strict false``, its default) and logs only the first
    ten tracebacks; here every such row is logged with the reason and its pictures, and the
    count of this process so far. A class at module level so that dataloader workers started
    with ``spawn`` can unpickle it. Rows over ``--max_length`` (ms-swift's
    ``MaxLengthError``, dropped by ``--truncation_strategy delete``) are counted apart."""

    failed = 0
    too_long = 0

    def __init__(self, encode):
        self.encode = encode

    def __call__(self, row, *args, **kwargs):
        try:
            return self.encode(row, *args, **kwargs)
        except FatalRowError as exc:
            logger.error(f"svp: {exc}")
            raise StopTraining(str(exc)) from exc
        except Exception as exc:
            from swift.template.base import MaxLengthError

            images = row.get("images") if isinstance(row, dict) else None
            if isinstance(exc, MaxLengthError):
                type(self).too_long += 1
                if type(self).too_long in (1, 10, 100, 1000) or type(self).too_long % 10000 == 0:
                    logger.warning(f"svp: {type(self).too_long} rows over --max_length in this "
                                   "process so far; ms-swift trains on other rows in their place")
            else:
                type(self).failed += 1
                logger.warning(
                    f"svp: a training row could not be encoded ({type(exc).__name__}: {exc}); "
                    f"ms-swift trains on a random other row in its place. Pictures: "
                    f"{_short_images(images)}. Rows replaced in this process so far: "
                    f"{type(self).failed} (check the data with data_tools/check_data.py; "
                    f"--strict true stops at the first one)")
            raise


def _short_images(images) -> str:
    if not images:
        return "none"
    paths = [i.get("path") if isinstance(i, dict) else i for i in images]
    return ", ".join(str(p)[:200] for p in paths[:4]) + (" ..." if len(paths) > 4 else "")


_ENCODE_MARK = "_svp_counted_encode"


def install_replacement_count() -> None:
    """Every dataset ms-swift encodes lazily goes through :class:`CountedEncode`; the count
    of this process is also logged when it exits."""
    from swift.dataset.utils import LazyLLMDataset

    if getattr(LazyLLMDataset, _ENCODE_MARK, False):
        return
    original = LazyLLMDataset.__init__

    def __init__(self, dataset, encode_func, *args, **kwargs):
        if not isinstance(encode_func, CountedEncode):
            encode_func = CountedEncode(encode_func)
        original(self, dataset, encode_func, *args, **kwargs)

    LazyLLMDataset.__init__ = __init__
    setattr(LazyLLMDataset, _ENCODE_MARK, True)
    atexit.register(_report_replaced)


def _report_replaced() -> None:
    if CountedEncode.failed or CountedEncode.too_long:
        logger.warning(f"svp: rows ms-swift replaced in this process: {CountedEncode.failed} "
                       f"that could not be encoded, {CountedEncode.too_long} over "
                       "--max_length (each logged above; dataloader workers log their own)")


_WIDE_MARK = "_svp_wide_images_refused"


def install_wide_image_refusal() -> None:
    """ms-swift's ``load_image`` converts every picture to RGB, which clips samples wider than
    8 bits: a 16-bit PNG trains as an almost white picture without a word. Such a picture is
    refused there instead (a ValueError naming it), so the row is counted and logged by
    :class:`CountedEncode` like any other that cannot be encoded. Pictures in registry
    datasets and in our converters' output are refused before training already."""
    import swift.template.base as template_base

    if getattr(template_base, _WIDE_MARK, False):
        return
    original = template_base.load_image

    def load_image(image):
        from io import BytesIO

        from PIL import Image
        from swift.template.vision_utils import load_file

        from svp.common.image_check import WIDE_MODES

        name = image[:200] if isinstance(image, str) else "an in-memory picture"
        opened = load_file(image)
        if isinstance(opened, BytesIO):
            opened = Image.open(opened)
        if isinstance(opened, Image.Image) and opened.mode in WIDE_MODES:
            raise ValueError(f"{name}: mode {opened.mode}: samples wider than 8 bits, which "
                             "the RGB conversion clips (the picture would train almost white)"
                             "; convert it to 8 bits first")
        return original(opened)

    template_base.load_image = load_image
    setattr(template_base, _WIDE_MARK, True)


def register() -> None:
    """The one-job guard, DeepSpeed on CPU processes, the full-checkpoint resume, the
    ``svp_rank_check`` callback, supervised-only logits for weighted losses, counted row
    replacements (and 16-bit pictures refused where ms-swift reads them) and the clean exit
    (idempotent)."""
    install_replacement_count()
    install_wide_image_refusal()
    install_one_job_guard()
    install_supervised_logits()
    install_deepspeed_cpu_comm()
    install_full_resume_fix()
    install_clean_exit()
    callbacks_map[CALLBACK] = RankCheckCallback
