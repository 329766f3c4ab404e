"""Facts of PerceptionLM's input format that the template, the tiny test model and the tests
share (no ms-swift here): its default system prompt and how many ``<|image|>`` tokens an
image's tiles stand for."""

from __future__ import annotations

# PerceptionLM's default system prompt (its chat template uses it when a conversation has none)
SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the "
          "visual content that the user provides, and assist the user with a variety of tasks "
          "using natural language.")


def image_tokens(shape: tuple[int, ...], patch_size: int, pooling_ratio: int) -> int:
    """``<|image|>`` tokens of one image's ``[tiles, 3, H, W]`` pixels, as its processor counts
    them: per tile (H / patch / pooling) x (W / patch / pooling)."""
    tiles, _, h, w = shape
    return tiles * (h // patch_size // pooling_ratio) * (w // patch_size // pooling_ratio)
