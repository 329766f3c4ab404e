"""Offline, seeded, random-weight Qwen2.5-VL / Qwen3-VL / PerceptionLM model directories for
tests and demos.

No model hub is reachable in CI, yet every end-to-end test must drive the real loading code
(``swift sft --model DIR``, ``from_pretrained``). This module builds a directory that loads
exactly like a real checkpoint: a small config of the real architecture, a byte-level BPE
tokenizer built here, the default image / video processors and a chat template.

The one thing that must match the real models is where the special tokens sit: ms-swift
hard-codes ``image_token_id = 151655`` in its Qwen templates, so a compact vocabulary would
silently mis-expand image placeholders. The BPE vocabulary is therefore padded with
unreachable ``<|filler_N|>`` entries so that ``<|endoftext|>`` is 151643, ``<|im_start|>``
151644, ``<|image_pad|>`` 151655, ``<tool_call>`` 151657, and so on, as in Qwen's tokenizer;
``len(tokenizer)`` equals the real one (151665 / 151669), so vocabulary resizing behaves the
same too. The ``lm_head`` rows of the filler ids are zero, so greedy decoding of the random
model yields BPE text rather than filler strings.

``perception_lm`` follows the same rule with Llama 3's layout (PerceptionLM-1B's LLM is Llama
3.2 1B): BPE and fillers below 128000, then 256 special tokens at 128000..128255 with
``<|begin_of_text|>`` 128000, ``<|image|>`` / ``<|video|>`` at 128002 / 128003 (the ids the
config carries), ``<|start_header_id|>`` 128006, ``<|end_header_id|>`` 128007, ``<|eot_id|>``
128009; its vision tower is timm's Perception Encoder (``vit_pe_core``) at tiny sizes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

ARCHES = ("qwen2_5_vl", "qwen3_vl", "qwen3",  # qwen3: the text-only LLM NEO is built from
          "perception_lm")
BPE_SIZE = 2000
FIRST_SPECIAL_ID = 151643
VOCAB_SIZE = 151936  # embedding rows, as in the real 2B/4B/8B-class configs

# (token, special) in id order from 151643; "special" as in Qwen's tokenizer_config.
QWEN25_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
]
QWEN3_EXTRA = [("<tool_response>", False), ("</tool_response>", False),
               ("<think>", False), ("</think>", False)]

# Llama 3's special tokens (PerceptionLM names reserved 0 / 1 <|image|> / <|video|>)
LLAMA3_FIRST_SPECIAL = 128000
LLAMA3_NAMED = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 2: "<|image|>", 3: "<|video|>",
                6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>",
                9: "<|eot_id|>", 10: "<|python_tag|>"}
LLAMA3_VOCAB = 128256
# Llama 3's split: like Qwen's, but digits in runs of up to three
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PLM_TILE = 112  # the tiny tower's tile (PerceptionLM-1B: 448); 8 x 8 patches of 14


# Qwen's pre-tokenizer split pattern (contractions, letters, single digits, punctuation runs,
# newlines, spaces): the split must match so that digit-by-digit coordinates tokenize alike.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_WORDS = (
    "the a an of in on at to with and or is are was this that what where which who how many "
    "please identify segment mask region object image picture photo crop look closer answer "
    "think zoom left right front back top bottom middle black white red green blue yellow "
    "small large chair table person dog cat car tree sky building window door cup bottle "
    "book phone bag shoe hat shirt man woman child bird horse sheep cow boat train bus truck "
    "describe caption detail there here not no yes target label json bbox box point first "
    "second third step because so then finally color shape circle square triangle texture "
    "background foreground count number near far above below between inside outside"
).split()
_SNIPPETS = (
    '```json\n[{"mask_2d": "', '", "label": "', '"}]\n```', "No target.",
    '{"bbox_2d": [', "], ", '"label": ', "<answer>", "</answer>", "Crop ", "[x1, y1, x2, y2]",
    "0123456789", ", ", ". ", "? ", "\n", "\n\n", ": ", "(", ")", "{", "}", "[", "]",
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model: small enough for CPU, shaped like the real one."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vision_depth: int = 2
    vision_hidden: int = 64
    vision_heads: int = 4


def llama3_special_tokens() -> list[str]:
    """Llama 3's 256 special tokens in id order from 128000 (PerceptionLM's names)."""
    return [LLAMA3_NAMED.get(i, f"<|reserved_special_token_{i}|>") for i in range(256)]


def added_tokens(arch: str) -> list[tuple[str, bool]]:
    """The Qwen added tokens of ``arch`` in id order starting at 151643."""
    _check_arch(arch)
    if arch == "perception_lm":
        raise ValueError("perception_lm has Llama 3's layout: llama3_special_tokens()")
    return QWEN25_ADDED + (QWEN3_EXTRA if arch in ("qwen3_vl", "qwen3") else [])


def _check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHES}")


def _corpus(seed: int, n_lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = rng.choices(_WORDS, k=rng.randint(3, 14))
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        line = " ".join(words)
        if rng.random() < 0.5:
            line += rng.choice(_SNIPPETS) + str(rng.randint(0, 1000))
        lines.append(line + rng.choice([".", "?", "", "\n"]))
    lines.extend(_SNIPPETS)
    return lines


def build_tokenizer(arch: str, seed: int = 0):
    """A byte-level BPE tokenizer with the family's added tokens at the real ids (see module
    doc): Qwen's from 151643, or Llama 3's from 128000 for ``perception_lm``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    llama = arch == "perception_lm"
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT if llama else QWEN_SPLIT), behavior="isolated",
                             invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    base = Tokenizer(models.BPE())
    base.normalizer = None if llama else normalizers.NFC()
    base.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    base.train_from_iterator(_corpus(seed), trainer=trainer)
    state = json.loads(base.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in state["model"]["merges"]]
    first = LLAMA3_FIRST_SPECIAL if llama else FIRST_SPECIAL_ID
    for i in range(len(vocab), first):
        vocab[f"<|filler_{i}|>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None if llama else normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    table = ([(t, True) for t in llama3_special_tokens()] if llama else added_tokens(arch))
    for text, special in table:
        added = AddedToken(text, special=special, normalized=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    for i, (text, _) in enumerate(table):
        got = tok.token_to_id(text)
        if got != first + i:
            raise RuntimeError(f"{text} got id {got}, expected {first + i}")
    if llama:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
            pad_token="<|end_of_text|>", model_max_length=131072,
            clean_up_tokenization_spaces=False,
            extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"})
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
    )


def plm_chat_template() -> str:
    """PerceptionLM's conversation format: BOS, a system turn (its default prompt unless the
    conversation starts with one), then per turn the header, the turn's images as
    ``<|image|>`` (videos ``<|video|>``) before its trimmed text, and ``<|eot_id|>``."""
    from svp.masktok.perception_lm import SYSTEM

    return (
        "{{- bos_token -}}"
        "{%- if messages[0].role == 'system' -%}"
        "{%- set sys = messages[0].content if messages[0].content is string "
        "else messages[0].content[0].text -%}{%- set rest = messages[1:] -%}"
        "{%- else -%}{%- set sys = '" + SYSTEM + "' -%}{%- set rest = messages -%}"
        "{%- endif -%}"
        "{{- '<|start_header_id|>system<|end_header_id|>\n\n' + sys | trim + '<|eot_id|>' -}}"
        "{%- for message in rest -%}"
        "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' -}}"
        "{%- if message.content is string -%}{{- message.content | trim -}}"
        "{%- else -%}"
        "{%- for part in message.content if part.type == 'image' -%}{{- '<|image|>' -}}"
        "{%- endfor -%}"
        "{%- for part in message.content if part.type == 'video' -%}{{- '<|video|>' -}}"
        "{%- endfor -%}"
        "{%- for part in message.content if part.type == 'text' -%}{{- part.text | trim -}}"
        "{%- endfor -%}"
        "{%- endif -%}"
        "{{- '<|eot_id|>' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}"
        "{%- endif -%}"
    )


def chat_template(arch: str) -> str:
    """ChatML with Qwen-VL vision placeholders; Qwen2.5-VL adds its default system prompt."""
    default_system = (
        "{%- if messages[0].role != 'system' -%}"
        "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
        "{%- endif -%}" if arch == "qwen2_5_vl" else "")
    return (
        default_system
        + "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message.role + '\\n' -}}"
        "{%- if message.content is string -%}{{- message.content -}}"
        "{%- else -%}{%- for part in message.content -%}"
        "{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}"
        "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
        "{%- elif part.type == 'video' or 'video' in part -%}"
        "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
        "{%- elif 'text' in part -%}{{- part.text -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def build_config(arch: str, spec: TinySpec = TinySpec()):
    """A real-architecture config with tiny sizes; mrope sections sum to head_dim / 2. The
    text-only ``qwen3`` ties its embeddings, as Qwen3-1.7B (NEO-2B's base) does."""
    _check_arch(arch)
    head_dim = spec.hidden // spec.heads
    if arch == "perception_lm":
        from transformers import PerceptionLMConfig

        eot = LLAMA3_FIRST_SPECIAL + 9
        text = dict(model_type="llama", vocab_size=LLAMA3_VOCAB, hidden_size=spec.hidden,
                    intermediate_size=spec.intermediate, num_hidden_layers=spec.layers,
                    num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
                    head_dim=head_dim, max_position_embeddings=131072, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                    bos_token_id=LLAMA3_FIRST_SPECIAL, eos_token_id=eot,
                    pad_token_id=LLAMA3_FIRST_SPECIAL + 1, tie_word_embeddings=True,
                    dtype="float32")
        # PerceptionLM-1B's tower settings (no post norm, no pooling head, the CLS token
        # dropped after it) at tiny sizes, one tile of PLM_TILE pixels
        grid = PLM_TILE // 14
        vision = dict(architecture="vit_pe_core_large_patch14_336", num_classes=0,
                      model_args={"embed_dim": spec.vision_hidden, "depth": spec.vision_depth,
                                  "num_heads": spec.vision_heads,
                                  "img_size": [PLM_TILE, PLM_TILE], "global_pool": "",
                                  "use_post_transformer_norm": False,
                                  "ref_feat_shape": [grid, grid]})
        config = PerceptionLMConfig(text_config=text, vision_config=vision,
                                    vision_use_cls_token=True, projector_pooling_ratio=2,
                                    image_token_id=LLAMA3_FIRST_SPECIAL + 2,
                                    video_token_id=LLAMA3_FIRST_SPECIAL + 3,
                                    tie_word_embeddings=True)
        config.architectures = ["PerceptionLMForConditionalGeneration"]
        config.dtype = "float32"
        return config
    if arch == "qwen3":
        from transformers import Qwen3Config

        config = Qwen3Config(
            vocab_size=VOCAB_SIZE, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads, head_dim=head_dim, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            bos_token_id=FIRST_SPECIAL_ID, eos_token_id=FIRST_SPECIAL_ID,
            pad_token_id=FIRST_SPECIAL_ID, tie_word_embeddings=True, dtype="float32")
        config.architectures = ["Qwen3ForCausalLM"]
        return config
    text = dict(
        vocab_size=VOCAB_SIZE, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, max_position_embeddings=32768,
        bos_token_id=FIRST_SPECIAL_ID, eos_token_id=FIRST_SPECIAL_ID + 2,
        pad_token_id=FIRST_SPECIAL_ID, tie_word_embeddings=False, dtype="float32",
    )
    vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_hidden,
                  num_heads=spec.vision_heads, intermediate_size=spec.intermediate,
                  out_hidden_size=spec.hidden, spatial_merge_size=2, temporal_patch_size=2)
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        third = head_dim // 2 // 3
        section = [head_dim // 2 - 2 * third, third, third]  # [2, 3, 3] for head_dim 16
        text.update(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                     "mrope_section": section})
        vision.update(patch_size=14, window_size=112,
                      fullatt_block_indexes=[spec.vision_depth - 1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                  tie_word_embeddings=False)
        config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    else:
        from transformers import Qwen3VLConfig

        half = head_dim // 2
        section = [half - 2 * (half // 4), half // 4, half // 4]  # [4, 2, 2] for head_dim 16
        text.update(head_dim=head_dim, rope_parameters={
            "rope_type": "default", "rope_theta": 5000000.0,
            "mrope_section": section, "mrope_interleaved": True})
        vision.update(patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[0],
                      hidden_act="gelu_pytorch_tanh")
        config = Qwen3VLConfig(text_config=text, vision_config=vision,
                               tie_word_embeddings=False)
        config.architectures = ["Qwen3VLForConditionalGeneration"]
    config.image_token_id = FIRST_SPECIAL_ID + 12
    config.video_token_id = FIRST_SPECIAL_ID + 13
    config.vision_start_token_id = FIRST_SPECIAL_ID + 9
    config.vision_end_token_id = FIRST_SPECIAL_ID + 10
    config.dtype = "float32"
    return config


def build_processor(arch: str, tokenizer):
    """Tokenizer + the default image/video processors of the architecture + chat template
    (the text-only ``qwen3``: the tokenizer with the chat template)."""
    if arch == "qwen3":
        tokenizer.chat_template = chat_template(arch)
        return tokenizer
    if arch == "perception_lm":
        from transformers import (
            PerceptionLMImageProcessor,
            PerceptionLMProcessor,
            PerceptionLMVideoProcessor,
        )

        # tiles + thumbnail as PerceptionLM-1B, on the tiny tower's tile; up to 4 tiles
        return PerceptionLMProcessor(
            image_processor=PerceptionLMImageProcessor(
                tile_size=PLM_TILE, max_num_tiles=4, vision_input_type="thumb+tile"),
            video_processor=PerceptionLMVideoProcessor(), tokenizer=tokenizer,
            patch_size=14, pooling_ratio=2, chat_template=plm_chat_template())
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(), chat_template=chat_template(arch))
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216})
    return Qwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(), chat_template=chat_template(arch))


def build_tiny_model(arch: str, out_dir: str | Path, seed: int = 0,
                     spec: TinySpec = TinySpec()) -> Path:
    """Write a loadable model directory to ``out_dir`` and return it.

    The directory is written to a temporary sibling and renamed into place, so a concurrent
    or interrupted build never leaves a half-written model that a later run would trust.
    """
    import torch
    from transformers import GenerationConfig

    from svp.common.io import atomic_dir

    _check_arch(arch)
    out = Path(out_dir).resolve()
    with atomic_dir(out) as tmp:
        torch.manual_seed(seed)
        config = build_config(arch, spec)
        if arch == "qwen2_5_vl":
            from transformers import Qwen2_5_VLForConditionalGeneration as Model
        elif arch == "perception_lm":
            from transformers import PerceptionLMForConditionalGeneration as Model
        elif arch == "qwen3":
            from transformers import Qwen3ForCausalLM as Model
        else:
            from transformers import Qwen3VLForConditionalGeneration as Model
        model = Model(config).to(torch.float32).eval()
        tokenizer = build_tokenizer(arch, seed=seed)
        llama = arch == "perception_lm"
        first = LLAMA3_FIRST_SPECIAL if llama else FIRST_SPECIAL_ID
        with torch.no_grad():
            n_bpe = len(json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]) + 256
            head = model.get_output_embeddings().weight
            head[n_bpe:first].zero_()  # (tied in perception_lm: unused rows, zero either way)
            if not llama:
                head[first + len(added_tokens(arch)):].zero_()
        if llama:
            model.generation_config = GenerationConfig(
                bos_token_id=first, pad_token_id=first + 1, eos_token_id=[first + 9, first + 1],
                do_sample=False)
        else:
            model.generation_config = GenerationConfig(
                bos_token_id=FIRST_SPECIAL_ID, pad_token_id=FIRST_SPECIAL_ID,
                eos_token_id=[FIRST_SPECIAL_ID + 2, FIRST_SPECIAL_ID], do_sample=False)
        model.save_pretrained(tmp)
        build_processor(arch, tokenizer).save_pretrained(tmp)
        (tmp / "tiny_model.json").write_text(json.dumps(
            {"arch": arch, "seed": seed, "spec": spec.__dict__,
             "built_by": "svp.testing.tiny_model"}, indent=2))
    return out


def builder_fingerprint() -> str:
    """Changes whenever this builder or the transformers version changes (cache key)."""
    import hashlib

    import transformers

    src = Path(__file__).read_bytes()
    return hashlib.sha256(src + transformers.__version__.encode()).hexdigest()[:12]


def _built_once(out: Path, build) -> Path:
    """``out`` when it is built (its ``tiny_model.json`` exists), else ``build(out)`` under a
    lock: parallel test workers share the cache, so the others wait and then find it built
    instead of replacing a model that is in use. ``build`` writes atomically itself."""
    import fcntl

    if (out / "tiny_model.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / f".{out.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "tiny_model.json").is_file():
            build(out)
    return out


def cached_tiny_model(arch: str, cache_root: str | Path, seed: int = 0) -> Path:
    """Build once per builder version into ``cache_root`` and reuse it (tests, demo, bench)."""
    _check_arch(arch)
    out = Path(cache_root).resolve() / f"tiny-{arch}-s{seed}-{builder_fingerprint()}"
    return _built_once(out, lambda o: build_tiny_model(arch, o, seed=seed))


def build_arch_model(arch: str, tiny: Path, out_dir: Path, seed: int = 0) -> Path:
    """Write a random-weight bf16 model of the bundled real config ``arch`` with the tokenizer,
    processors and generation config of the tiny model ``tiny`` (a temporary sibling renamed
    into place, as :func:`build_tiny_model`)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    from svp.common.io import atomic_dir
    from svp.common.memory_plan import resolve_config

    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(resolve_config(arch),
                                                        dtype=torch.bfloat16)
        model.generation_config = GenerationConfig.from_pretrained(tiny)
        model.save_pretrained(tmp)
        AutoProcessor.from_pretrained(tiny).save_pretrained(tmp)
        (tmp / "tiny_model.json").write_text(json.dumps(
            {"arch": arch, "seed": seed, "random_weights": True,
             "built_by": "svp.testing.tiny_model.build_arch_model"}, indent=2))
    return Path(out_dir).resolve()


def cached_arch_model(arch: str, cache_root: str | Path, seed: int = 0) -> Path:
    """A random-weight bf16 model directory of a *real* architecture (``qwen2_5_vl_3b``,
    ``qwen2_5_vl_7b``, ``qwen3_vl_4b``, ``qwen3_vl_8b``: the bundled configs of
    :mod:`svp.common.memory_plan`) with the tiny model's tokenizer and processors, whose ids
    are Qwen's: benches run the same commands at full size without any weights. Built once
    into ``cache_root`` (several GB) and reused."""
    family = "qwen3_vl" if arch.startswith("qwen3_vl") else "qwen2_5_vl"
    out = Path(cache_root).resolve() / f"random-{arch}-s{seed}-{builder_fingerprint()}"
    tiny = cached_tiny_model(family, cache_root, seed)
    return _built_once(out, lambda o: build_arch_model(arch, tiny, o, seed))


def cached_neo_model(cache_root: str | Path, extra_layers: int = 2, seed: int = 0) -> Path:
    """A NEO-init checkpoint built by ``data_tools/build_neo.py``'s code from the tiny Qwen3
    (2 LLM layers + ``extra_layers`` pre-buffer layers), built once into ``cache_root``."""
    import hashlib

    from svp.neo.build import BuildOptions, build_neo

    qwen3 = cached_tiny_model("qwen3", cache_root, seed)
    neo = Path(__file__).resolve().parents[1] / "neo"
    src = b"".join((neo / f).read_bytes() for f in
                   ("build.py", "convert.py", "configuration.py", "modeling.py"))
    key = hashlib.sha256(builder_fingerprint().encode() + src).hexdigest()[:12]
    out = Path(cache_root).resolve() / f"neo-e{extra_layers}-s{seed}-{key}"

    def build(o: Path) -> None:
        build_neo(qwen3, o, BuildOptions(extra_layers=extra_layers, seed=seed, vision_hidden=32,
                                         min_pixels=32 * 32, max_pixels=128 * 128),
                  log=lambda msg: None)
        (o / "tiny_model.json").write_text(json.dumps(
            {"arch": "neo", "extra_layers": extra_layers, "seed": seed,
             "built_by": "svp.testing.tiny_model.cached_neo_model"}, indent=2))

    return _built_once(out, build)
