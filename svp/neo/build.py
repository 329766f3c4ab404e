"""Write a NEO-init checkpoint from a Qwen3 LLM directory (``data_tools/build_neo.py``).

Every later stage then loads it with plain ``from_pretrained``, which is what makes ZeRO-3
work: upstream converted inside a custom ``from_pretrained`` on every start-up. The directory
is written to a temporary sibling and renamed into place, so an interrupted build never
leaves a checkpoint a later stage would trust.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from svp.common.io import atomic_dir
from svp.neo.configuration import (
    IMG_CONTEXT,
    IMG_END,
    IMG_START,
    NEO_TOKENS,
    NEOChatConfig,
    NEOLLMConfig,
    NEOVisionConfig,
)
from svp.neo.convert import convert_state_dict

_DROP_LLM_KEYS = {"model_type", "architectures", "transformers_version", "layer_types",
                  "auto_map", "_name_or_path", "torch_dtype", "dtype", "num_hidden_layers",
                  "use_sliding_window", "sliding_window", "max_window_layers"}


@dataclass(frozen=True)
class BuildOptions:
    """Upstream's kit defaults (VLMTrainKit/neo/train/argument.py), except where a field says
    otherwise."""

    extra_layers: int
    seed: int = 42
    rope_theta_hw: float = 10000.0
    rope_theta_vision: float = 1000.0  # the kit's ModelArguments default (config class: 1e4)
    vision_hidden: int = 1024
    patch_size: int = 16
    min_pixels: int = 65536
    max_pixels: int = 4194304


def load_llm_state_dict(llm_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint."""
    from safetensors.torch import load_file

    index = llm_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (llm_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{llm_dir}: no model.safetensors(.index.json); "
                                "build_neo reads safetensors checkpoints only")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(llm_dir / name)))
    return state


def add_neo_tokens(tokenizer) -> dict[str, int]:
    """Add NEO's tokens in NEO's order (on Qwen3: <IMG_CONTEXT> = 151669 ... 151681) and
    return the three image ids; tokens already present (``<|im_start|>``) keep their ids."""
    tokenizer.add_tokens(list(NEO_TOKENS), special_tokens=True)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMG_CONTEXT, IMG_START, IMG_END)}
    if ids[IMG_START] != ids[IMG_CONTEXT] + 1 or ids[IMG_END] != ids[IMG_CONTEXT] + 2:
        raise ValueError(f"NEO's image tokens are not consecutive in this tokenizer: {ids}")
    return ids


def neo_config(llm_config, opts: BuildOptions, token_ids: dict[str, int],
               vocab_size: int) -> NEOChatConfig:
    base = llm_config.to_dict()
    n_llm = int(base["num_hidden_layers"])
    fields = {k: v for k, v in base.items() if k not in _DROP_LLM_KEYS}
    fields.update(vocab_size=vocab_size, extra_num_layers=opts.extra_layers,
                  num_hidden_layers=n_llm + opts.extra_layers,
                  rope_theta_hw=opts.rope_theta_hw)
    llm = NEOLLMConfig(**fields)
    vision = NEOVisionConfig(llm_hidden_size=llm.hidden_size, hidden_size=opts.vision_hidden,
                             rope_theta_vision=opts.rope_theta_vision,
                             patch_size=opts.patch_size, min_pixels=opts.min_pixels,
                             max_pixels=opts.max_pixels)
    config = NEOChatConfig(llm_config=llm, vision_config=vision,
                           img_context_token_id=token_ids[IMG_CONTEXT],
                           img_start_token_id=token_ids[IMG_START],
                           img_end_token_id=token_ids[IMG_END])
    config.architectures = ["NEOChatModel"]
    return config


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat((t, t.new_zeros(rows - t.shape[0], *t.shape[1:])))


def build_neo(llm_dir: str | Path, out_dir: str | Path, opts: BuildOptions,
              log=print) -> Path:
    """Convert ``llm_dir`` (a Qwen3 LLM) into a NEO-init checkpoint at ``out_dir``."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from svp.neo.modeling import NEOChatModel, NEOVisionModel

    llm_dir, out = Path(llm_dir).resolve(), Path(out_dir).resolve()
    llm_config = AutoConfig.from_pretrained(llm_dir)
    if llm_config.model_type != "qwen3":
        raise ValueError(f"{llm_dir}: model_type {llm_config.model_type!r}; NEO is built "
                         "from a Qwen3 LLM (model_type 'qwen3')")
    if opts.extra_layers < 0:
        raise ValueError(f"--extra-layers {opts.extra_layers} is negative")
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    token_ids = add_neo_tokens(tokenizer)
    vocab = max(llm_config.vocab_size, -(-len(tokenizer) // 128) * 128)
    config = neo_config(llm_config, opts, token_ids, vocab)
    log(f"build_neo: {llm_dir.name}: {config.llm_config.num_hidden_layers - opts.extra_layers} "
        f"LLM layers + {opts.extra_layers} pre-buffer layers; image tokens {token_ids}")

    base = load_llm_state_dict(llm_dir)
    dtype = base["model.embed_tokens.weight"].dtype
    state = convert_state_dict(base, config.llm_config, opts.extra_layers, opts.seed, dtype)
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        if key in state and state[key].shape[0] < vocab:  # upstream: zero rows, never random
            state[key] = _pad_rows(state[key], vocab)
    torch.manual_seed(opts.seed)
    vision = NEOVisionModel(config.vision_config).to(dtype)
    state.update({f"vision_model.{k}": v for k, v in vision.state_dict().items()})

    with torch.device("meta"):
        model = NEOChatModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    allowed = {"language_model.lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) - allowed:
        raise RuntimeError(f"build_neo: state dict mismatch: missing {missing}, "
                           f"unexpected {unexpected}")
    model.tie_weights()
    model.config.dtype = str(dtype).removeprefix("torch.")
    gen = {}
    if (llm_dir / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(llm_dir).to_diff_dict()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = gen.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    gen.update(eos_token_id=[im_end] + [e for e in eos if e != im_end],
               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    gen.pop("transformers_version", None)
    model.generation_config = GenerationConfig(**gen)

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "neo_build.json").write_text(json.dumps(
            {"llm": str(llm_dir), "extra_layers": opts.extra_layers, "seed": opts.seed,
             "options": opts.__dict__, "built_by": "svp.neo.build"}, indent=2))
    log(f"build_neo: wrote {out}")
    return out
