"""Adding the 514 mask tokens: single ids, non-special, rows initialised, never shrunk."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from svp.common.vocab import add_tokens
from svp.masktok.tokens import codes_to_text, mask_token_list
from tests.helpers import REPO, offline_env


@pytest.mark.parametrize("arch,rows_after", [("qwen2_5_vl", 152192), ("qwen3_vl", 152192)])
def test_cli_adds_tokens_to_tiny_models(tiny_model, tmp_path, arch, rows_after):
    src = tiny_model(arch)
    out = tmp_path / "mt"
    proc = subprocess.run([sys.executable, str(REPO / "data_tools" / "add_special_tokens.py"),
                           "--model", str(src), "--out", str(out)],
                          capture_output=True, text=True, env=offline_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "added 514 tokens" in proc.stdout
    before = AutoModelForImageTextToText.from_pretrained(src)
    model = AutoModelForImageTextToText.from_pretrained(out)
    tok = AutoProcessor.from_pretrained(out).tokenizer
    old_len = {"qwen2_5_vl": 151665, "qwen3_vl": 151669}[arch]
    assert len(tok) == old_len + 514
    ids = tok.convert_tokens_to_ids(mask_token_list())
    assert ids == list(range(old_len, old_len + 514))
    text = "It is " + codes_to_text(230, 89) + "."
    enc = tok.encode(text, add_special_tokens=False)
    assert ids[0] in enc and ids[1 + 230] in enc and ids[1 + 256 + 89] in enc
    assert tok.decode(enc, skip_special_tokens=True) == text  # non-special: kept
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == rows_after
    old = before.get_input_embeddings().weight
    assert torch.equal(emb[:old_len], old[:old_len]), "existing rows must not change"
    new = emb[old_len:old_len + 514]
    mean, std = old[:old_len].mean(0), old[:old_len].std(0)
    assert ((new - mean).abs() <= 0.02 * std * 6 + 1e-6).all()  # mean + 0.02 std noise
    assert new.std(0).mean() > 0  # rows differ from each other
    head = model.get_output_embeddings().weight
    assert head.shape[0] == rows_after and head[old_len:old_len + 514].abs().sum() > 0


class _Tok:
    """Minimal tokenizer stand-in with a configurable length."""

    def __init__(self, n: int):
        self.vocab = {f"t{i}": i for i in range(n)}

    def get_vocab(self):
        return dict(self.vocab)

    def add_tokens(self, tokens, special_tokens=False):
        for t in tokens:
            self.vocab[str(t)] = len(self.vocab)

    def convert_tokens_to_ids(self, toks):
        return [self.vocab[t] for t in toks]

    def __len__(self):
        return len(self.vocab)


class _Model(torch.nn.Module):
    def __init__(self, rows: int, dim: int = 8):
        super().__init__()
        self.emb = torch.nn.Embedding(rows, dim)
        self.resized_to = None

    def get_input_embeddings(self):
        return self.emb

    def get_output_embeddings(self):
        return None

    def resize_token_embeddings(self, n, mean_resizing=False):
        self.resized_to = n


def test_never_shrinks_a_larger_embedding_matrix():
    model, tok = _Model(rows=2000), _Tok(1000)  # room for 1514 tokens already
    summary = add_tokens(model, tok, [(mask_token_list(), False)])
    assert model.resized_to is None and summary["rows_after"] == 2000
    assert summary["added"] == 514 and summary["tied_head"]
    again = add_tokens(model, tok, [(mask_token_list(), False)])  # idempotent
    assert again["added"] == 0


@pytest.mark.parametrize("arch,parts", [("qwen2_5_vl", 2), ("qwen3", 1)])
def test_new_rows_tuner_trains_exactly_the_new_rows(tiny_model, arch, parts):
    """``--tuner_type lora_new_rows``' peft setup: the embedding's rows, and the LM head's when
    it is its own matrix (qwen3 ties it: one set of rows serves both); after an optimiser
    step with weight decay, every other row of both matrices is unchanged."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from svp.common.swift_new_rows import mark_new_rows, row_targets

    load = AutoModelForCausalLM if arch == "qwen3" else AutoModelForImageTextToText
    model = load.from_pretrained(tiny_model(arch))
    mark_new_rows(model, [151700, 151665])
    mark_new_rows(model, [151665])
    ids = model.svp_new_token_ids
    assert ids == [151665, 151700]
    targets = row_targets(model, ids)
    assert len(targets) == parts and all(v == ids for v in targets.values())
    before = [model.get_input_embeddings().weight.clone(), model.lm_head.weight.clone()]
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"],
                                            trainable_token_indices=targets))
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=0.1,
                            weight_decay=0.1)
    x = torch.tensor([[1, 151665, 2, 151700, 3]])
    peft(input_ids=x, labels=x).loss.backward()
    opt.step()
    merged = peft.merge_and_unload()
    old = torch.ones(before[0].shape[0], dtype=torch.bool)
    old[ids] = False
    for now, was in zip([merged.get_input_embeddings().weight, merged.lm_head.weight], before,
                        strict=True):
        assert torch.equal(now[old], was[old])
        assert not torch.equal(now[ids], was[ids])
