"""CoVT's optimizer groups (svp/covt/optim.py) against upstream's rule, written out."""

from __future__ import annotations

import torch

from svp.covt.heads import CovtHeads
from svp.covt.optim import is_head_projection, param_groups
from svp.covt.real import real_head_shapes
from svp.covt.tokens import ThoughtConfig


def upstream_projection(name: str) -> bool:
    """Upstream's QwenTrainer.create_optimizer: '_projection', 'query_vectors' or
    'cross_attention' in the name, applied to upstream's names for the same tensors."""
    return any(k in name for k in ("_projection", "query_vectors", "cross_attention"))


UPSTREAM_NAME = {"proj": "{e}_projection", "queries": "{e}_query_vectors",
                 "attn": "{e}_cross_attention", "net": "{e}_token_generator"}


def test_head_groups_are_upstreams():
    heads = CovtHeads(64, real_head_shapes(ThoughtConfig.parse("sam,depth,dino,pidinet"), {}))
    prefix = "base_model.model.covt_heads.modules_to_save.default."
    named = [(prefix + n, p) for n, p in heads.named_parameters()]
    lora = torch.nn.Parameter(torch.zeros(2, 2))
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    named += [("base_model.model.model.layers.0.q_proj.lora_A.default.weight", lora),
              ("base_model.model.covt_heads.original_module.heads.sam.proj.weight", frozen)]
    for name, _ in named[:-2]:
        expert, part = name[len(prefix):].split(".")[1:3]
        assert is_head_projection(name) == upstream_projection(
            UPSTREAM_NAME[part].format(e=expert)), name
    decay = {n for n, _ in named if not n.endswith("bias")}
    groups = param_groups(named, decay, lr=5e-5, head_lr=1e-5, weight_decay=0.1)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    for name, p in named:
        if not p.requires_grad:
            assert id(p) not in by_id
            continue
        lr = 1e-5 if ".depth." not in name and "covt_heads" in name else 5e-5
        assert by_id[id(p)] == (lr, 0.0 if name.endswith("bias") else 0.1), name
    assert sum(len(g["params"]) for g in groups) == len(named) - 1
