"""NEO, the native (encoder-free) VLM, written for transformers 5 (upstream:
VLMTrainKit/neo/model/).

One Qwen3-shaped decoder whose first ``extra_num_layers`` layers are the *pre-buffer*, fed by a
two-convolution patch embedding instead of a vision encoder. Every layer uses Multi-Head Native
Attention: q and k are ``2 * head_dim`` wide (a T part from ``q_proj``/``k_proj`` plus H and W
halves from ``q_proj_hw``/``k_proj_hw``, each normed and rotated with its own RoPE), v is
``head_dim`` wide and the scale is ``1 / sqrt(head_dim)``. FlashAttention cannot run that
(q/k width != v width, bidirectional image blocks); dense SDPA with the exact mask runs
everywhere, flex attention on CUDA.

Module and parameter names are the released checkpoints' (``language_model.model.layers.N.*``,
``vision_model.embeddings.*``), so ``Paranioar/NEO1_0-*`` state dicts load unchanged.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen3.modeling_qwen3 import Qwen3MLP, Qwen3RMSNorm

from svp.neo import mask as neo_mask
from svp.neo import positions, rope
from svp.neo.configuration import NEOChatConfig, NEOLLMConfig, NEOVisionConfig
from svp.neo.loss import supervised_lm_loss


# ----------------------------------------------------------------------------- vision
class NEOVisionEmbeddings(nn.Module):
    """16x16 patch conv, GELU, interleaved 2-D RoPE on the features, 2x2 merge conv."""

    def __init__(self, config: NEOVisionConfig):
        super().__init__()
        self.config = config
        p = config.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, p, stride=p)
        self.dense_embedding = nn.Conv2d(config.hidden_size, config.llm_hidden_size,
                                         config.merge, stride=config.merge)
        self.act = nn.GELU()

    def forward(self, pixel_values: torch.Tensor, grid_hw: torch.Tensor) -> torch.Tensor:
        """``[sum N_i, C*p*p]`` patches of the images with patch grids ``grid_hw [n, 2]`` ->
        ``[sum (gh/m)(gw/m), llm_hidden]`` tokens, row-major per image, images in order."""
        cfg = self.config
        p, m = cfg.patch_size, cfg.merge
        weight = self.patch_embedding.weight
        x = pixel_values.to(weight.dtype).view(-1, cfg.num_channels, p, p)
        x = self.act(self.patch_embedding(x).flatten(1))  # [N, hidden]
        grids = [(int(h), int(w)) for h, w in grid_hw.view(-1, 2).tolist()]
        if sum(h * w for h, w in grids) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} patches but the grids {grids} need "
                             f"{sum(h * w for h, w in grids)}")
        out, start = [], 0
        for gh, gw in grids:
            if gh % m or gw % m:
                raise ValueError(f"patch grid {gh}x{gw} is not a multiple of the merge {m}")
            if max(gh, gw) > cfg.max_position_embeddings_vision:
                raise ValueError(f"patch grid {gh}x{gw} exceeds the vision RoPE table "
                                 f"({cfg.max_position_embeddings_vision})")
            feats = rope.vision_rope_2d(x[start:start + gh * gw], gw, cfg.rope_theta_vision)
            start += gh * gw
            grid = feats.view(gh, gw, -1).permute(2, 0, 1)[None]
            merged = self.dense_embedding(grid)[0]  # [llm_hidden, gh/m, gw/m]
            out.append(merged.flatten(1).transpose(0, 1))
        return torch.cat(out, 0)


class NEOVisionModel(nn.Module):
    """Holds the embeddings under upstream's name (``vision_model.embeddings``)."""

    def __init__(self, config: NEOVisionConfig):
        super().__init__()
        self.embeddings = NEOVisionEmbeddings(config)

    def forward(self, pixel_values: torch.Tensor, grid_hw: torch.Tensor) -> torch.Tensor:
        return self.embeddings(pixel_values, grid_hw)


# ----------------------------------------------------------------------------- language model
@dataclass
class NativeRope:
    """cos/sin tables ``[B, 1, L, d]`` of the three parts for one forward."""

    t: tuple[torch.Tensor, torch.Tensor]
    h: tuple[torch.Tensor, torch.Tensor]
    w: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def build(cls, config: NEOLLMConfig, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
              dtype: torch.dtype) -> NativeRope:
        d = config.head_dim

        def table(pos, dim, base):
            cos, sin = rope.cos_sin(pos, dim, base, dtype)
            return cos[:, None], sin[:, None]

        return cls(table(t, d, config.rope_theta), table(h, d // 2, config.rope_theta_hw),
                   table(w, d // 2, config.rope_theta_hw))


class NEOAttention(nn.Module):
    """Multi-Head Native Attention (upstream: Qwen3Attention in
    VLMTrainKit/neo/model/modeling_neo_qwen3.py)."""

    def __init__(self, config: NEOLLMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        e, d = config.hidden_size, config.head_dim
        self.head_dim = d
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        bias = config.attention_bias
        self.q_proj = nn.Linear(e, self.num_heads * d, bias=bias)
        self.q_proj_hw = nn.Linear(e, self.num_heads * d, bias=bias)
        self.k_proj = nn.Linear(e, self.num_kv_heads * d, bias=bias)
        self.k_proj_hw = nn.Linear(e, self.num_kv_heads * d, bias=bias)
        self.v_proj = nn.Linear(e, self.num_kv_heads * d, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * d, e, bias=bias)
        eps = config.rms_norm_eps
        self.q_norm = Qwen3RMSNorm(d, eps=eps)
        self.k_norm = Qwen3RMSNorm(d, eps=eps)
        self.q_norm_h = Qwen3RMSNorm(d // 2, eps=eps)
        self.q_norm_w = Qwen3RMSNorm(d // 2, eps=eps)
        self.k_norm_h = Qwen3RMSNorm(d // 2, eps=eps)
        self.k_norm_w = Qwen3RMSNorm(d // 2, eps=eps)
        self.scaling = d ** -0.5  # 1/sqrt(head_dim), not 1/sqrt(2 * head_dim)

    def _native(self, x: torch.Tensor, proj, proj_hw, norm, norm_h, norm_w, heads: int,
                rope_: NativeRope) -> torch.Tensor:
        b, n, _ = x.shape
        d = self.head_dim
        t = norm(proj(x).view(b, n, heads, d)).transpose(1, 2)
        hh, ww = proj_hw(x).view(b, n, heads, d).chunk(2, dim=-1)
        hh = norm_h(hh).transpose(1, 2)
        ww = norm_w(ww).transpose(1, 2)
        return torch.cat((rope.apply_rotate_half(t, *rope_.t),
                          rope.apply_rotate_half(hh, *rope_.h),
                          rope.apply_rotate_half(ww, *rope_.w)), dim=-1)

    def forward(self, hidden_states: torch.Tensor, rope_: NativeRope, attn_mask,
                cache: NEOCache | None = None) -> torch.Tensor:
        b, n, _ = hidden_states.shape
        q = self._native(hidden_states, self.q_proj, self.q_proj_hw, self.q_norm,
                         self.q_norm_h, self.q_norm_w, self.num_heads, rope_)
        k = self._native(hidden_states, self.k_proj, self.k_proj_hw, self.k_norm,
                         self.k_norm_h, self.k_norm_w, self.num_kv_heads, rope_)
        v = self.v_proj(hidden_states).view(b, n, self.num_kv_heads, self.head_dim)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        out = attend(q, k, v, attn_mask, self.scaling)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


_FLEX = None


def _flex_attention():
    """``torch.compile(flex_attention)`` once per process (compiled kernels on CUDA)."""
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def attend(q, k, v, attn_mask, scaling: float) -> torch.Tensor:
    """Attention with GQA for a dense boolean mask (SDPA) or a ``(BlockMask, padded_len)``
    pair (flex attention; q/k/v zero-padded to the mask's length and the output cropped)."""
    if isinstance(attn_mask, tuple):
        block_mask, padded = attn_mask
        n = q.shape[2]
        pad = (0, 0, 0, padded - n)
        q, k, v = (nn.functional.pad(x, pad) for x in (q, k, v))
        out = _flex_attention()(q, k, v, block_mask=block_mask, scale=scaling, enable_gqa=True)
        return out[:, :, :n]
    return nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, scale=scaling, enable_gqa=q.shape[1] != k.shape[1])


class NEODecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: NEOLLMConfig, layer_idx: int):
        super().__init__()
        self.self_attn = NEOAttention(config, layer_idx)
        self.mlp = Qwen3MLP(config)
        self.input_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, rope_: NativeRope = None, attn_mask=None,
                cache: NEOCache | None = None) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), rope_, attn_mask,
                                       cache)
        hidden_states = residual + hidden_states
        residual = hidden_states
        return residual + self.mlp(self.post_attention_layernorm(hidden_states))


class NEOLanguageBody(nn.Module):
    """``language_model.model``: embeddings, pre-buffer + LLM layers, final norm."""

    def __init__(self, config: NEOLLMConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         config.pad_token_id)
        self.layers = nn.ModuleList(NEODecoderLayer(config, i)
                                    for i in range(config.num_hidden_layers))
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, inputs_embeds: torch.Tensor, rope_: NativeRope, attn_mask,
                cache: NEOCache | None = None, output_hidden_states: bool = False):
        hidden = inputs_embeds
        states = [hidden] if output_hidden_states else None
        for layer in self.layers:
            hidden = layer(hidden, rope_=rope_, attn_mask=attn_mask, cache=cache)
            if states is not None:
                states.append(hidden)
        return self.norm(hidden), states


class NEOLanguageModel(nn.Module):
    """``language_model``: the body plus ``lm_head`` (tied to the embedding on NEO-2B).

    ms-swift treats the module holding ``lm_head`` as "the LLM" (``get_lm_head_model``) and
    grows vocabularies through it (another plugin's tokens, ``--new_special_tokens``), so it
    answers the embedding calls; resizing goes to the owning :class:`NEOChatModel`, whose
    transformers implementation handles tied heads and ZeRO-3 partitions."""

    def __init__(self, config: NEOLLMConfig):
        super().__init__()
        self.config = config
        self.model = NEOLanguageBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._owner = None  # set by NEOChatModel (a weak reference, not a submodule)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def resize_token_embeddings(self, *args, **kwargs):
        owner = self._owner() if self._owner is not None else None
        if owner is None:
            raise RuntimeError("this NEO language model has no owning NEOChatModel to resize")
        return owner.resize_token_embeddings(*args, **kwargs)


class NEOCache:
    """Per-layer keys (post-RoPE, ``2 * head_dim`` wide) and values for incremental decoding,
    plus each row's next t index (upstream keeps one global counter: batch size 1 only)."""

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.valid: torch.Tensor | None = None  # [B, L_cached] key validity
        self.next_t: torch.Tensor | None = None  # [B]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.keys[layer] is not None:
            k = torch.cat((self.keys[layer], k), dim=2)
            v = torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


# ----------------------------------------------------------------------------- the model
class NEOPreTrainedModel(PreTrainedModel):
    config_class = NEOChatConfig
    config: NEOChatConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NEODecoderLayer"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.llm_config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, Qwen3RMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, nn.Conv2d):
            module.reset_parameters()


@dataclass
class NEOInputs:
    """What one forward needs after the embedding step."""

    embeds: torch.Tensor
    t: torch.Tensor
    h: torch.Tensor
    w: torch.Tensor
    doc: torch.Tensor
    img: torch.Tensor
    valid: torch.Tensor | None


class NEOChatModel(NEOPreTrainedModel, GenerationMixin):
    """``vision_model`` + ``language_model``; computes its own weighted loss and generates
    batched, left-padded, with a KV cache."""

    _tied_weights_keys = {"language_model.lm_head.weight":
                          "language_model.model.embed_tokens.weight"}

    def __init__(self, config: NEOChatConfig):
        super().__init__(config)
        self.vision_model = NEOVisionModel(config.vision_config)
        self.language_model = NEOLanguageModel(config.llm_config)
        self.language_model._owner = weakref.ref(self)
        self.attn_backend = "auto"
        self.post_init()

    # -- HF plumbing
    def get_input_embeddings(self):
        return self.language_model.model.embed_tokens

    def set_input_embeddings(self, value):
        self.language_model.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.language_model.lm_head

    def set_output_embeddings(self, value):
        self.language_model.lm_head = value

    # -- inputs
    def _merged_grid(self, image_grid_hw: torch.Tensor | None) -> torch.Tensor | None:
        if image_grid_hw is None or len(image_grid_hw) == 0:
            return None
        return image_grid_hw.view(-1, 2) // self.config.vision_config.merge

    def _dummy_image(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One merged token's worth of zero patches: text-only batches still run the vision
        convs, so their parameters stay in the graph (DDP / ZeRO need every rank alike)."""
        v = self.config.vision_config
        m, p = v.merge, v.patch_size
        device = self.vision_model.embeddings.patch_embedding.weight.device
        pixels = torch.zeros(m * m, v.num_channels * p * p, device=device)
        return pixels, torch.tensor([[m, m]], device=device)

    def _embed(self, input_ids: torch.Tensor, pixel_values, image_grid_hw) -> torch.Tensor:
        cfg = self.config
        embeds = self.get_input_embeddings()(input_ids)
        ctx = input_ids == cfg.img_context_token_id
        if pixel_values is None or len(pixel_values) == 0:
            if bool(ctx.any()):
                raise ValueError(f"{int(ctx.sum())} image context tokens but no pixel_values")
            pixels, grid = self._dummy_image()
            vit = self.vision_model(pixels, grid)
            return embeds + 0.0 * vit.sum().to(embeds.dtype)
        vit = self.vision_model(pixel_values, image_grid_hw).to(embeds.dtype)
        if vit.shape[0] != int(ctx.sum()):
            raise ValueError(f"{vit.shape[0]} image tokens from pixel_values but "
                             f"{int(ctx.sum())} <IMG_CONTEXT> positions in input_ids")
        embeds = embeds.clone()
        embeds[ctx] = vit
        return embeds

    def prepare_native_inputs(self, input_ids: torch.Tensor, pixel_values=None,
                              image_grid_hw=None, seq_boundaries=None,
                              attention_mask=None) -> NEOInputs:
        """Embeddings with the image tokens scattered in, (t, h, w), document and image ids."""
        cfg = self.config
        if seq_boundaries is not None:
            if input_ids.shape[0] != 1:
                raise ValueError("seq_boundaries describes one packed row; got a batch of "
                                 f"{input_ids.shape[0]}")
            doc = positions.doc_ids_from_boundaries(seq_boundaries, input_ids.shape[1])[None]
        else:
            doc = torch.zeros_like(input_ids)
        valid = attention_mask.bool() if attention_mask is not None else None
        if valid is not None and bool(valid.all()):
            valid = None
        t = positions.t_indexes(input_ids, cfg.img_start_token_id, cfg.img_context_token_id,
                                doc, valid)
        h, w = positions.hw_indexes(input_ids, cfg.img_context_token_id,
                                    self._merged_grid(image_grid_hw))
        img = positions.image_ids(input_ids, cfg.img_start_token_id, cfg.img_context_token_id)
        embeds = self._embed(input_ids, pixel_values, image_grid_hw)
        return NEOInputs(embeds, t, h, w, doc, img, valid)

    def _use_flex(self, device: torch.device) -> bool:
        if self.attn_backend == "flex":
            return True
        return self.attn_backend == "auto" and device.type == "cuda"

    def build_mask(self, x: NEOInputs):
        if self._use_flex(x.embeds.device):
            return neo_mask.flex_block_mask(x.doc, x.img, x.valid)
        return neo_mask.dense_mask(x.doc, x.img, x.valid)

    # -- forward
    def forward(self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None,
                image_grid_hw: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                loss_weight: torch.Tensor | None = None,
                seq_boundaries: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None,
                output_attentions: bool | None = None,
                output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> CausalLMOutputWithPast:
        """Training / scoring forward. ``labels`` and ``loss_weight`` are unshifted ``[B, L]``
        (the loss shifts once); ``seq_boundaries`` marks the samples of a packed row. There
        is deliberately no ``**kwargs``: the HF Trainer then neither rescales the loss by a
        global token count nor skips the gradient-accumulation division, so the loss is
        upstream's per-micro-batch weighted mean (ms-swift's trainer overrides that check;
        the ``neo`` template sets ``model_accepts_loss_kwargs = False`` for it).
        ``inputs_embeds`` and ``output_attentions`` exist because PEFT's causal-LM wrapper
        always passes them; NEO embeds its own inputs and its kernels return no attention
        weights."""
        if inputs_embeds is not None or output_attentions:
            raise ValueError("NEO takes input_ids (it embeds images itself) and cannot return "
                             "attention weights")
        x = self.prepare_native_inputs(input_ids, pixel_values, image_grid_hw, seq_boundaries,
                                       attention_mask)
        rope_ = NativeRope.build(self.config.llm_config, x.t, x.h, x.w, x.embeds.dtype)
        hidden, states = self.language_model.model(
            x.embeds, rope_, self.build_mask(x), output_hidden_states=bool(output_hidden_states))
        lm_head = self.language_model.lm_head
        loss = logits = None
        if labels is not None:
            labels = labels.view(input_ids.shape)
            weights = None if loss_weight is None else loss_weight.view(input_ids.shape)
            loss = supervised_lm_loss(hidden, lm_head, labels, weights)
        if labels is None or not self.training:
            # training with labels skips the full logits (see supervised_lm_loss); ms-swift
            # then reports no token accuracy for the step
            logits = lm_head(hidden)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      hidden_states=tuple(states) if states else None)

    # -- generation
    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        """PEFT's causal-LM wrapper reads this attribute; :meth:`generate` does not use the
        HF loop, so this only returns its arguments."""
        return {"input_ids": input_ids, **kwargs}

    def _step_logits(self, embeds: torch.Tensor, t, h, w, attn_mask, cache: NEOCache):
        rope_ = NativeRope.build(self.config.llm_config, t, h, w, embeds.dtype)
        hidden, _ = self.language_model.model(embeds, rope_, attn_mask, cache=cache)
        return self.language_model.lm_head(hidden[:, -1]).float()

    def prefill(self, input_ids: torch.Tensor, attention_mask=None, pixel_values=None,
                image_grid_hw=None) -> tuple[torch.Tensor, NEOCache]:
        """Run the prompt (left-padded rows), return the last position's logits and the cache
        whose ``next_t`` is each row's max t + 1 (upstream: ``current_index`` reset here)."""
        x = self.prepare_native_inputs(input_ids, pixel_values, image_grid_hw, None,
                                       attention_mask)
        cache = NEOCache(len(self.language_model.model.layers))
        cache.valid = (attention_mask.bool() if attention_mask is not None
                       else torch.ones_like(input_ids, dtype=torch.bool))
        cache.next_t = x.t.max(dim=1).values + 1
        mask = neo_mask.dense_mask(x.doc, x.img, x.valid)
        return self._step_logits(x.embeds, x.t, x.h, x.w, mask, cache), cache

    def decode_step(self, tokens: torch.Tensor, cache: NEOCache) -> torch.Tensor:
        """Logits after appending ``tokens [B]``: t = the row's max prompt t + k, h = w = 0,
        attending to every valid cached key and itself."""
        embeds = self.get_input_embeddings()(tokens[:, None])
        t = cache.next_t[:, None]
        zeros = torch.zeros_like(t)
        cache.valid = torch.cat((cache.valid, torch.ones_like(t, dtype=torch.bool)), dim=1)
        mask = cache.valid[:, None, None, :]
        logits = self._step_logits(embeds, t, zeros, zeros, mask, cache)
        cache.next_t = cache.next_t + 1
        return logits

    def _repeat_images(self, input_ids, pixel_values, image_grid_hw, n: int):
        """Each row's images repeated ``n`` times in row order (``num_return_sequences``)."""
        grid = image_grid_hw.view(-1, 2)
        per_row = (input_ids == self.config.img_start_token_id).sum(1).tolist()
        patches = (grid[:, 0] * grid[:, 1]).tolist()
        pix, grids, i, p0 = [], [], 0, 0
        for k in per_row:
            size = int(sum(patches[i:i + k]))
            pix += [pixel_values[p0:p0 + size]] * n
            grids += [grid[i:i + k]] * n
            i, p0 = i + k, p0 + size
        return torch.cat(pix), torch.cat(grids)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None,
                 image_grid_hw: torch.Tensor | None = None,
                 generation_config: GenerationConfig | None = None, streamer=None,
                 stopping_criteria=None, return_dict_in_generate: bool | None = None,
                 **kwargs):
        """Greedy or sampled decoding of a left-padded batch with a KV cache. Returns the
        prompt followed by the new tokens (the HF convention), padded with ``pad_token_id``
        after a row's EOS; a dict with ``sequences`` when ``return_dict_in_generate``."""
        from transformers.generation.utils import GenerateDecoderOnlyOutput

        from svp.neo.sampling import Sampler

        kwargs.pop("use_model_defaults", None)
        kwargs.pop("seq_boundaries", None)
        config = generation_config or self.generation_config or GenerationConfig()
        config = config.copy() if hasattr(config, "copy") else config
        unknown = {k: v for k, v in kwargs.items() if not hasattr(config, k)}
        if unknown:
            raise TypeError(f"NEO generate got unexpected arguments {sorted(unknown)}")
        for k, v in kwargs.items():
            setattr(config, k, v)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n_ret = config.num_return_sequences or 1
        if n_ret > 1:
            if pixel_values is not None and len(pixel_values):
                pixel_values, image_grid_hw = self._repeat_images(
                    input_ids, pixel_values, image_grid_hw, n_ret)
            input_ids = input_ids.repeat_interleave(n_ret, 0)
            attention_mask = attention_mask.repeat_interleave(n_ret, 0)
        eos = config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        pad = config.pad_token_id
        if pad is None:
            pad = next(iter(eos)) if eos else 0
        max_new = config.max_new_tokens
        if max_new is None:
            max_new = max(1, (config.max_length or 20) - input_ids.shape[1])
        sampler = Sampler(config)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        b = input_ids.shape[0]
        finished = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
        eos_ids = torch.tensor(sorted(eos), dtype=input_ids.dtype, device=input_ids.device)
        logits, cache = self.prefill(input_ids, attention_mask, pixel_values, image_grid_hw)
        history = input_ids
        for step in range(max_new):
            # a finished row keeps decoding pad tokens (its output is masked), so every
            # row keeps its index: ms-swift's stop-word criteria track rows by index
            tokens = torch.where(finished, torch.full_like(finished, pad, dtype=history.dtype),
                                 sampler(history, logits))
            history = torch.cat((history, tokens[:, None]), dim=1)
            if streamer is not None:
                streamer.put(tokens.cpu())
            finished = finished | torch.isin(tokens, eos_ids)
            if stopping_criteria is not None:
                finished = finished | stopping_criteria(history, logits).to(finished.device)
            if bool(finished.all()) or step == max_new - 1:
                break
            logits = self.decode_step(tokens, cache)
        if streamer is not None:
            streamer.end()
        if return_dict_in_generate or config.return_dict_in_generate:
            return GenerateDecoderOnlyOutput(sequences=history)
        return history

