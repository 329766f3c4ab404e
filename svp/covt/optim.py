"""CoVT's optimizer groups as upstream's ``QwenTrainer.create_optimizer`` makes them, as a pure
function of the parameter names.

Upstream trains its projection heads at ``--projection_layer_lr`` (1e-5 in its ``run.sh``)
while LoRA trains at ``--learning_rate`` (5e-5): a parameter is a projection one when its name
holds ``_projection``, ``query_vectors`` or ``cross_attention``. Ours are named
``covt_heads...heads.<expert>.{proj,queries,attn}``: the same three parts. The depth token
MLP (upstream ``depth_token_generator``, ours ``heads.depth.net``) matches none and trains at
the main rate, as upstream's rule would give it. Weight decay applies as the trainer decides
(biases and norms none), in both rate groups alike, as upstream.
"""

from __future__ import annotations

from collections.abc import Iterable

#: the parts of our head names that stand for upstream's projection parameters
HEAD_PARTS = (".proj.", ".queries", ".attn.")


def is_head_projection(name: str) -> bool:
    """A CoVT head parameter that upstream trains at its projection learning rate."""
    return "covt_heads" in name and any(part in name for part in HEAD_PARTS)


def param_groups(named: Iterable[tuple[str, object]], decay: set[str], lr: float,
                 head_lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters in (rate) x (decay) groups, empty groups left out; ``decay`` are
    the names the trainer decays. The projection groups carry ``head_lr``, the others
    ``lr``."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in named:
        if not getattr(p, "requires_grad", False):
            continue
        groups.setdefault((is_head_projection(name), name in decay), []).append(p)
    out = []
    for head in (False, True):
        for decayed in (True, False):
            params = groups.get((head, decayed))
            if params:
                group = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
                group["lr"] = head_lr if head else lr
                out.append(group)
    return out
