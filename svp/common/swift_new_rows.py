"""``--tuner_type lora_new_rows``: ms-swift's LoRA plus only the embedding / LM-head rows of
the tokens a plugin added (peft ``trainable_token_indices``).

Why: a plugin that adds tokens (CoVT's visual-thought tokens, the mask tokens) must train
their rows, or the model can never emit them. ``--modules_to_save embed_tokens lm_head``
does that by training and saving two whole vocab x hidden matrices (1.09 B parameters on
Qwen2.5-VL-7B, under weight decay, so every old token's row drifts too). Upstream CoVT keeps
the old rows fixed with a gradient row mask; peft's trainable tokens do the same thing with a
delta for the new rows only, and a checkpoint holds just those rows.

The rows come from the loader: :func:`svp.common.swift_vocab.grow_vocabulary` records the ids
of every token group it was given on the model (:data:`ATTR`), whether the tokens were added
now or already in the checkpoint (a run that starts from a merged model still trains them).
A tuner in ms-swift's ``tuners_map`` is used by ``swift sft`` (prepare, resume), the trainer's
checkpoint save and ``swift infer|export --adapters`` (load); the plugin that grows the
vocabulary registers it, so each of those commands knows it through ``--external_plugins``.
"""

from __future__ import annotations

import torch
from swift.tuner_plugin import Tuner

ATTR = "svp_new_token_ids"
TUNER = "lora_new_rows"


def mark_new_rows(model, ids: list[int]) -> None:
    """Record (and merge with earlier records) the token ids whose rows should train."""
    have = set(getattr(model, ATTR, ()) or ())
    setattr(model, ATTR, sorted(have | {int(i) for i in ids}))


def row_targets(model, ids: list[int]) -> dict[str, list[int]]:
    """peft's ``trainable_token_indices``: the input embedding's module name, and the LM
    head's when it is a separate matrix (a tied head follows the embedding in peft)."""
    names = {id(m): n for n, m in model.named_modules()}
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    targets = {names[id(emb)]: list(ids)}
    if head is not None and head.weight is not emb.weight:
        targets[names[id(head)]] = list(ids)
    return targets


def _lora_kwargs(args, model) -> dict:
    """The LoRA settings ms-swift's own ``--tuner_type lora`` would use."""
    from swift.pipelines.train.tuner import get_modules_to_save, get_target_modules

    return {"r": args.lora_rank, "target_modules": get_target_modules(args, model),
            "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "bias": args.lora_bias, "modules_to_save": get_modules_to_save(args, model),
            "use_rslora": args.use_rslora, "use_dora": args.use_dora,
            "lorap_lr_ratio": args.lorap_lr_ratio, "init_lora_weights": args.init_weights}


def _collect_rows_on_this_device(layer, weight, rows, embed_dim):
    """peft's ZeRO-3 start of trainable tokens, on the device the accelerator uses: peft
    builds the receiving tensor on CUDA only ("right now, only CUDA is implemented"), so a
    ZeRO-3 run on DeepSpeed's CPU accelerator (gloo) fails at start-up. Same steps: gather
    the weight, rank 0 copies the rows, everyone receives them."""
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator
    from peft.utils.integrations import gather_params_ctx

    device = torch.device(get_accelerator().current_device_name())
    with gather_params_ctx([weight], modifier_rank=None):
        if dist.get_rank() == 0:
            rows_now = weight[rows].clone().to(device)
        else:
            rows_now = torch.empty((len(rows), embed_dim), dtype=weight.dtype, device=device)
    dist.broadcast(rows_now, src=0)
    return rows_now


def _patch_peft_for_cpu_zero3() -> None:
    """Only where there is no CUDA (on a GPU peft's own code runs unchanged)."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    if not torch.cuda.is_available():
        TrainableTokensLayer._collect_token_weights = _collect_rows_on_this_device


class NewRowsLoRA(Tuner):
    """LoRA on the linears ms-swift targets + trainable rows for the added tokens."""

    @staticmethod
    def prepare_model(args, model: torch.nn.Module) -> torch.nn.Module:
        from swift.tuners import LoraConfig, Swift
        from swift.utils import get_logger

        ids = getattr(model, ATTR, None)
        if not ids:
            raise ValueError(f"--tuner_type {TUNER}: the model type {args.model_type} added no "
                             "tokens (no rows to train); use --tuner_type lora")
        kwargs = _lora_kwargs(args, model)
        targets = row_targets(model, ids)
        whole = sorted(set(kwargs["modules_to_save"] or ()) & {n.rsplit(".", 1)[-1]
                                                                for n in targets})
        if whole:
            raise ValueError(f"--tuner_type {TUNER} trains the new rows of {', '.join(whole)}; "
                             f"drop them from --modules_to_save (that trains the whole matrix)")
        # tuners in tuners_map are handed the model unfrozen (ms-swift freezes only its own)
        model.requires_grad_(False)
        _patch_peft_for_cpu_zero3()
        config = LoraConfig(task_type=args.task_type.upper(), lora_dtype=args.lora_dtype,
                            trainable_token_indices=targets, **kwargs)
        model = Swift.prepare_model(model, config)
        get_logger().info(f"{TUNER}: LoRA + {len(ids)} token rows of "
                          f"{', '.join(targets)} (ids {ids[0]}..{ids[-1]})")
        return model

    @staticmethod
    def save_pretrained(model, save_directory: str, state_dict: dict | None = None,
                        safe_serialization: bool = True, **kwargs) -> None:
        # Only the row deltas: the loader re-grows the vocabulary with the same seeded rows
        # (its log line carries their digest), so peft's "the vocabulary changed, save the
        # whole embedding" fallback would store 2 x vocab x hidden for nothing.
        model.save_pretrained(save_directory, state_dict=state_dict,
                              safe_serialization=safe_serialization,
                              selected_adapters=["default"], save_embedding_layers=False)

    @staticmethod
    def from_pretrained(model, model_id: str, **kwargs):
        from swift.tuners import Swift

        _patch_peft_for_cpu_zero3()
        return Swift.from_pretrained(model, model_id, **kwargs)


def register() -> None:
    """Idempotent: make ``--tuner_type lora_new_rows`` known to ms-swift."""
    from swift.tuner_plugin import tuners_map

    tuners_map[TUNER] = NewRowsLoRA
