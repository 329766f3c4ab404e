"""Make ``neo_chat`` known to transformers' Auto classes (no remote code): exported and
built checkpoints load with ``AutoModel``/``AutoConfig``, and the memory planner resolves the
bundled NEO configs. transformers only, no ms-swift."""

from __future__ import annotations


def register_auto_classes() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from svp.neo.configuration import NEOChatConfig
    from svp.neo.modeling import NEOChatModel

    AutoConfig.register("neo_chat", NEOChatConfig, exist_ok=True)
    AutoModel.register(NEOChatConfig, NEOChatModel, exist_ok=True)
    AutoModelForCausalLM.register(NEOChatConfig, NEOChatModel, exist_ok=True)
