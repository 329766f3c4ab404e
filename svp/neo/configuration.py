"""NEO configurations (transformers 5 dataclass style) with the released checkpoints' fields.

Three classes mirror upstream's ``neo_chat`` / ``llm_config`` / ``vision_config`` layout so a
released ``config.json`` (``Paranioar/NEO1_0-*``) parses. Two upstream traps are handled here
rather than left to the user: ``layer_types`` is forced to one full-attention entry per layer
(upstream's 40/42-layer configs carry 32 entries and cannot be built), and the inference
configs' 1-tuples (``llm_hidden_size: [2048]``) are unwrapped to scalars.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, Qwen3Config

IMG_CONTEXT = "<IMG_CONTEXT>"
IMG_START = "<img>"
IMG_END = "</img>"
# NEO's added tokens in the order its tokenizer adds them: on Qwen3 (151669 entries) they take
# ids 151669..151681, inside Qwen3's 151936 embedding rows, so the embedding is never resized.
NEO_TOKENS = (IMG_CONTEXT, IMG_START, IMG_END, "<quad>", "</quad>", "<ref>", "</ref>",
              "<box>", "</box>", "<|im_start|>", "<|im_end|>", "<|action_start|>",
              "<|action_end|>", "<|plugin|>", "<|interpreter|>")


def _scalar(value):
    """Upstream's inference vision config stores some numbers as 1-tuples; saved as lists."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"expected a number or a 1-element list, got {value!r}")
        return value[0]
    return value


@strict
class NEOVisionConfig(PreTrainedConfig):
    """The patch embedding: a 16x16 conv to ``hidden_size``, 2-D RoPE, a 2x2 conv to the LLM."""

    model_type = "neo_vision"
    base_config_key = "vision_config"

    llm_hidden_size: int | list | tuple = 2048
    downsample_ratio: float | list | tuple = 0.5
    hidden_size: int = 1024
    rope_theta_vision: float = 10000.0
    max_position_embeddings_vision: int = 10000
    num_channels: int = 3
    patch_size: int = 16
    min_pixels: int = 65536
    max_pixels: int = 4194304

    def __post_init__(self, **kwargs):
        self.llm_hidden_size = int(_scalar(self.llm_hidden_size))
        self.downsample_ratio = float(_scalar(self.downsample_ratio))
        if round(1 / self.downsample_ratio) != 1 / self.downsample_ratio:
            raise ValueError(f"downsample_ratio {self.downsample_ratio} is not 1/k")
        super().__post_init__(**kwargs)

    @property
    def merge(self) -> int:
        """Patches merged per side by the dense conv (2 for ratio 0.5)."""
        return round(1 / self.downsample_ratio)

    @property
    def factor(self) -> int:
        """Image sides are multiples of this: patch size times merge (32)."""
        return self.patch_size * self.merge


@strict
class NEOLLMConfig(Qwen3Config):
    """Qwen3 plus the H/W RoPE base and the pre-buffer depth; ``num_hidden_layers`` is the total
    (pre-buffer + LLM layers)."""

    model_type = "neo_llm"
    base_config_key = "llm_config"

    rope_theta_hw: float = 10000.0
    max_position_embeddings_hw: int = 10000
    extra_num_layers: int = 0

    def __post_init__(self, **kwargs):
        # Every NEO layer is full attention; upstream's configs keep the base LLM's list, whose
        # length (32 or 28) disagrees with num_hidden_layers (40 / 42) and fails validation.
        self.layer_types = ["full_attention"] * self.num_hidden_layers
        self.use_sliding_window = False
        if not 0 <= self.extra_num_layers <= self.num_hidden_layers:
            raise ValueError(f"extra_num_layers {self.extra_num_layers} not in "
                             f"[0, num_hidden_layers={self.num_hidden_layers}]")
        super().__post_init__(**kwargs)

    @property
    def rope_theta(self) -> float:
        """The T-axis base (transformers 5 keeps it in ``rope_parameters``)."""
        params = self.rope_parameters or {}
        return float(params.get("rope_theta", 1000000.0))


@strict
class NEOChatConfig(PreTrainedConfig):
    """The whole model: ``llm_config`` + ``vision_config`` + the image token ids."""

    model_type = "neo_chat"
    sub_configs = {"vision_config": NEOVisionConfig, "llm_config": NEOLLMConfig}

    vision_config: dict | PreTrainedConfig | None = None
    llm_config: dict | PreTrainedConfig | None = None
    img_context_token_id: int | None = None
    img_start_token_id: int | None = None
    img_end_token_id: int | None = None
    downsample_ratio: float | list | tuple = 0.5
    template: str = "neo1_0"
    tie_word_embeddings: bool = False
    hidden_size: int | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.llm_config, dict):
            self.llm_config = NEOLLMConfig(**{k: v for k, v in self.llm_config.items()
                                              if k != "model_type"})
        elif self.llm_config is None:
            self.llm_config = NEOLLMConfig()
        if isinstance(self.vision_config, dict):
            self.vision_config = NEOVisionConfig(**{k: v for k, v in self.vision_config.items()
                                                    if k != "model_type"})
        elif self.vision_config is None:
            self.vision_config = NEOVisionConfig(llm_hidden_size=self.llm_config.hidden_size)
        self.downsample_ratio = float(_scalar(self.downsample_ratio))
        self.tie_word_embeddings = bool(self.llm_config.tie_word_embeddings)
        self.hidden_size = self.llm_config.hidden_size  # DeepSpeed "auto" sizes read this
        if self.vision_config.llm_hidden_size != self.llm_config.hidden_size:
            raise ValueError(f"vision_config.llm_hidden_size {self.vision_config.llm_hidden_size} "
                             f"!= llm_config.hidden_size {self.llm_config.hidden_size}")
        super().__post_init__(**kwargs)

    def get_text_config(self, *args, **kwargs):
        """Generation and ms-swift read vocab / eos / layer counts from the LLM config."""
        return self.llm_config
