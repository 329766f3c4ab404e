"""Per-GPU memory of a training run, planned from the real architecture built on the meta
device (no weights, no GPU): what a recipe needs before anyone spends a GPU-hour on it.

The model is built from its config with ``torch.device("meta")``, so every parameter count
is the real one (checked against the published totals: Qwen2.5-VL-3B 3.75 B, 7B 8.29 B,
Qwen3-VL-4B 4.44 B, 8B 8.77 B; NEO-2B 2.59 B and NEO-9B 10.25 B, from the configuration_neo_*.py
defaults of upstream's kit). NEO's q and
k are twice head_dim wide (Multi-Head Native Attention), which its activation widths carry;
its mask runs through flex attention on GPU, so no s^2 term either. On top of the counts,
bytes per GPU (bf16 weights, AdamW):

weights      2 B x every parameter (+ LoRA / ``modules_to_save`` copies); ZeRO-3: / GPUs
gradients    DDP: 2 B x trainable, held twice (the gradients and DDP's reduce buckets);
             ZeRO-2: bf16 + fp32 partitions, 6 B x trainable / GPUs; ZeRO-3: the fp32
             partition, 4 B x trainable / GPUs (DeepSpeed's own accounting)
optimizer    DDP: AdamW states in the parameters' dtype, 2 x 2 B x trainable;
             ZeRO-2/3: fp32 master + m + v, 12 B x trainable / GPUs (ZeRO-3 also holds its
             largest layer gathered: 4 B x its parameters)
activations  per decoder layer and token, the tensors autograd keeps (SDPA/flash attention,
             no s^2 term): 2 B x (4 h + 2 h_q + 2 h_kv + 4 I); with gradient checkpointing
             only each layer's input (2 B x h) plus one layer recomputed
logits       supervised tokens x vocabulary x 12 B (bf16 logits, fp32 copy for the loss,
             fp32 gradient, bf16 gradient); ms-swift keeps only supervised positions
rollouts     generating through the trainer's model: its KV cache (and under ZeRO-3 the
             whole model gathered); vLLM colocate: its share of the GPU
experts      CoVT's frozen experts in fp32 with an activation allowance (given by the caller)
overhead     2 GB (CUDA context, NCCL buffers) + 10 % of the activations (fragmentation)

For full tuning the model-state terms equal the installed DeepSpeed's own estimators
(``estimate_zero2_model_states_mem_needs``: 2 P + 18 P / N; ``estimate_zero3_...``:
18 P / N + 4 x largest layer); a test calls them and holds the two equal. Activation
figures are estimates (checkpointing granularity, kernels and allocator behaviour move them
by some percent); the plan is for choosing settings, not a guarantee.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path

from svp.common.io import write_atomic

GB = 1024 ** 3
CONFIG_DIR = Path(__file__).with_name("model_configs")
# ms-swift / HF names of the published checkpoints -> the bundled config of each
KNOWN_MODELS = {
    "qwen/qwen2.5-vl-3b-instruct": "qwen2_5_vl_3b",
    "qwen/qwen2.5-vl-7b-instruct": "qwen2_5_vl_7b",
    "qwen/qwen3-vl-4b-instruct": "qwen3_vl_4b",
    "qwen/qwen3-vl-8b-instruct": "qwen3_vl_8b",
}


@dataclass(frozen=True)
class RunShape:
    """What a training run does, in the terms memory depends on."""

    arch: str                       # a bundled config name or a folder with config.json
    tuner: str = "lora"             # lora | full
    lora_rank: int = 64
    modules_to_save: tuple[str, ...] = ()   # e.g. ("embed_tokens", "lm_head")
    zero: int = 0                   # 0 (DDP), 2, 3
    gpus: int = 8
    gpu_mem_gb: float = 80.0
    batch: int = 1                  # per-device micro-batch
    seq_len: int = 4096
    supervised_fraction: float = 0.25  # share of tokens with labels (logits kept)
    grad_ckpt: bool = True
    freeze_vit: bool = True
    freeze_aligner: bool = True
    rollout_batch: int = 0          # sequences generated at once through the trainer's model
    vllm_fraction: float = 0.0      # vLLM colocate share of each GPU
    extra_trainable: int = 0        # parameters added by a plugin (e.g. CoVT heads)
    extra_gb: float = 0.0           # memory outside the model (e.g. CoVT experts)
    extra_label: str = ""
    partial: str = ""               # a model-defined trainable subset (NEO: "PT set")

    def __post_init__(self):
        if self.tuner not in ("lora", "full"):
            raise ValueError(f"tuner must be lora or full, got {self.tuner!r}")
        if self.zero not in (0, 2, 3):
            raise ValueError(f"zero must be 0 (DDP), 2 or 3, got {self.zero}")


@dataclass
class Counts:
    """Parameter counts of one architecture, by part."""

    total: int
    vision: int
    aligner: int
    language: int                   # decoder layers and final norm
    embed: int
    lm_head: int                    # 0 when tied to the embeddings
    lora_per_rank: int              # LoRA parameters per unit of rank on all LLM linears
    largest_layer: int
    hidden: int
    heads_dim: int                  # h_q = attention heads x head_dim
    kv_dim: int                     # h_kv
    intermediate: int
    layers: int
    vocab: int
    partial_trainable: int = 0      # parameters of the model's partial set (NEO: PT stage)


@dataclass
class Plan:
    shape: RunShape
    counts: Counts
    parts: dict[str, float] = field(default_factory=dict)  # name -> GB per GPU
    trainable: int = 0

    @property
    def total_gb(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.shape.gpu_mem_gb


def config_data(arch: str) -> dict:
    """The config JSON of a bundled name, a known hub id or a folder/JSON file."""
    name = KNOWN_MODELS.get(arch.lower(), arch)
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        path = Path(arch)
        if path.is_dir():
            path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config for {arch!r}: give one of "
                                f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.json')))}"
                                ", a known model id, or a model folder with config.json")
    return json.loads(path.read_text())


def resolve_config(arch: str):
    """A transformers config from a bundled name, a known hub id or a folder/JSON file."""
    from transformers import AutoConfig

    data = config_data(arch)
    return AutoConfig.for_model(data.pop("model_type"), **data)


# Counting builds the model on the meta device, which needs transformers and torch (seconds
# of start-up on every recipe launch); the counts are kept per config content and
# transformers version, so a recipe's plan costs a file read after the first time.
COUNTS_CACHE = Path.home() / ".cache" / "svp" / "param_counts"
COUNTS_VERSION = 2  # bump when count_on_meta changes what it counts
# model_type -> counter(config dict) for model types a capability defines itself (NEO); the
# capability registers it (svp/neo/memory.py), so this module depends on none of them
META_COUNTERS: dict[str, Callable[[dict], Counts]] = {}


def counts_key(arch: str) -> str:
    from importlib.metadata import version

    blob = json.dumps([COUNTS_VERSION, version("transformers"), config_data(arch)],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@cache
def count(arch: str, cache_dir: Path | None = COUNTS_CACHE) -> Counts:
    """Parameter counts of ``arch``: from ``cache_dir`` when this config was counted before,
    else built on the meta device and stored there (``cache_dir=None``: always build)."""
    if cache_dir is None:
        return count_on_meta(arch)
    path = Path(cache_dir) / f"{counts_key(arch)}.json"
    try:
        return Counts(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    counts = count_on_meta(arch)
    try:
        write_atomic(path, json.dumps(asdict(counts)))
    except OSError:
        pass  # a read-only home: plan without the cache
    return counts


def count_on_meta(arch: str) -> Counts:
    """Build ``arch`` on the meta device and count its parameters by part."""
    import torch
    from torch import nn
    from transformers import AutoModelForImageTextToText

    data = config_data(arch)
    if data.get("model_type") in META_COUNTERS:  # a model type a capability defines
        return META_COUNTERS[data["model_type"]](data)
    config = resolve_config(arch)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    by = dict.fromkeys(("vision", "aligner", "language", "embed", "lm_head"), 0)
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if "visual" in name:
            by["aligner" if "merger" in name else "vision"] += p.numel()
        elif "embed_tokens" in name:
            by["embed"] += p.numel()
        elif name.startswith("lm_head"):
            by["lm_head"] += p.numel()
        else:
            by["language"] += p.numel()
    lm = model.model.language_model
    lora = sum(m.in_features + m.out_features for m in lm.modules() if isinstance(m, nn.Linear))
    layer = max(sum(p.numel() for p in block.parameters()) for block in lm.layers)
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return Counts(total=sum(by.values()), **by, lora_per_rank=lora,
                  largest_layer=max(layer, by["embed"], by["lm_head"]),
                  hidden=text.hidden_size, heads_dim=text.num_attention_heads * head_dim,
                  kv_dim=text.num_key_value_heads * head_dim,
                  intermediate=text.intermediate_size, layers=text.num_hidden_layers,
                  vocab=text.vocab_size)


def trainable_params(shape: RunShape, c: Counts) -> tuple[int, int]:
    """(trainable parameters, parameters added to the model by the tuner)."""
    if shape.partial:
        if not c.partial_trainable:
            raise ValueError(f"{shape.arch} defines no partial trainable set "
                             f"({shape.partial!r})")
        return c.partial_trainable, 0
    if shape.tuner == "full":
        frozen = (c.vision if shape.freeze_vit else 0) + (c.aligner if shape.freeze_aligner
                                                           else 0)
        return c.total - frozen + shape.extra_trainable, shape.extra_trainable
    copies = sum({"embed_tokens": c.embed, "lm_head": c.lm_head or c.embed}[m]
                 for m in shape.modules_to_save if m in ("embed_tokens", "lm_head"))
    added = shape.lora_rank * c.lora_per_rank + copies + shape.extra_trainable
    return added, added


def plan(shape: RunShape) -> Plan:
    c = count(shape.arch)
    trainable, added = trainable_params(shape, c)
    n = shape.gpus
    weights = 2 * (c.total + added)
    if shape.zero == 3:
        weights /= n
        grads = 4 * trainable / n
        optim = 12 * trainable / n + 4 * c.largest_layer
    elif shape.zero == 2:
        grads = 6 * trainable / n
        optim = 12 * trainable / n
    else:  # DDP: gradients and their reduce buckets; AdamW states in bf16
        grads = 2 * 2 * trainable
        optim = 2 * 2 * trainable
    tokens = shape.batch * shape.seq_len
    per_layer = 2 * (4 * c.hidden + 2 * c.heads_dim + 2 * c.kv_dim + 4 * c.intermediate)
    if shape.grad_ckpt:
        acts = tokens * (2 * c.hidden * c.layers + per_layer)
    else:
        acts = tokens * per_layer * c.layers
    logits = tokens * shape.supervised_fraction * c.vocab * 12
    parts = {"weights": weights, "gradients": grads, "optimizer": optim,
             "activations": acts, "logits": logits}
    if shape.rollout_batch:  # generation through the trainer's model: KV cache
        parts["rollout KV cache"] = (2 * c.layers * c.kv_dim * 2 * shape.seq_len
                                     * shape.rollout_batch)
        if shape.zero == 3:  # the whole model is gathered while generating
            parts["rollout gathered weights"] = 2 * c.total * (n - 1) / n
    if shape.vllm_fraction:
        parts["vLLM colocate"] = shape.vllm_fraction * shape.gpu_mem_gb * GB
    if shape.extra_gb:
        parts[shape.extra_label or "extra"] = shape.extra_gb * GB
    parts["overhead"] = 2 * GB + 0.1 * (acts + logits)
    return Plan(shape, c, {k: v / GB for k, v in parts.items()}, trainable)


def deepspeed_model_states_gb(total_params: int, largest_layer: int, gpus: int,
                              zero: int) -> float:
    """The per-GPU model states of DeepSpeed's own estimators (no offload), in GB: the same
    numbers as ``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_...``, which a
    test calls to check :func:`plan` against (full tuning, everything trainable)."""
    if zero == 2:
        return (2 * total_params + 18 * total_params / gpus) / GB
    return (4 * largest_layer + 18 * total_params / gpus) / GB


def format_plan(p: Plan) -> str:
    s = p.shape
    mode = {0: "DDP", 2: "ZeRO-2", 3: "ZeRO-3"}[s.zero]
    head = (f"memory plan: {s.arch}, {s.tuner}" + (f" ({s.partial})" if s.partial else "")
            + (f" r{s.lora_rank}" if s.tuner == "lora" else "")
            + (f" + {'/'.join(s.modules_to_save)}" if s.modules_to_save else "")
            + f", {mode} on {s.gpus} x {s.gpu_mem_gb:g} GB, micro-batch {s.batch} x "
              f"{s.seq_len} tokens, gradient checkpointing {'on' if s.grad_ckpt else 'off'}; "
              f"{p.counts.total / 1e9:.2f} B parameters, {p.trainable / 1e9:.3f} B trainable")
    rows = [f"  {name:<26}{gb:8.1f} GB" for name, gb in p.parts.items()]
    verdict = "fits" if p.fits else "DOES NOT FIT"
    rows.append(f"  {'total per GPU':<26}{p.total_gb:8.1f} GB  "
                f"({verdict} in {s.gpu_mem_gb:g} GB)")
    return "\n".join([head, *rows])


def with_gpus(shape: RunShape, gpus: int, gpu_mem_gb: float) -> RunShape:
    return replace(shape, gpus=gpus, gpu_mem_gb=gpu_mem_gb)
