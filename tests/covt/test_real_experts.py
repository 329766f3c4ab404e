"""The real expert adapters, loaded by their real loading code from tiny random-weight
checkpoints written here in each library's own format (no weights can be downloaded):
shapes agree with the head shapes, gradients reach the tokens and never the expert, and a
missing checkpoint stops with the variable to set."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from svp.covt import real
from svp.covt.settings import checkpoint_variable, load
from svp.covt.tokens import SPECS, ThoughtConfig

IMAGENET = {"image_mean": list(real.IMAGENET_MEAN), "image_std": list(real.IMAGENET_STD)}


def images(n=2):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny checkpoints: {expert: path}."""
    from transformers import (
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        Dinov2Model,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    root = tmp_path_factory.mktemp("experts")
    torch.manual_seed(0)
    out = {}
    sam = importlib.import_module("segment_anything.build_sam")._build_sam(
        encoder_embed_dim=32, encoder_depth=4, encoder_num_heads=2,
        encoder_global_attn_indexes=[1, 3])
    out["sam"] = root / "sam_tiny.pth"
    torch.save(sam.state_dict(), out["sam"])

    dino_cfg = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=64, patch_size=14, image_size=518)
    depth = DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=Dinov2Config(**dino_cfg, out_indices=[1, 2, 3, 4],
                                     reshape_hidden_states=False),
        reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        head_hidden_size=8))
    out["depth"] = root / "depth"
    depth.save_pretrained(out["depth"])

    out["dino"] = root / "dino"
    Dinov2Model(Dinov2Config(**dino_cfg)).save_pretrained(out["dino"])
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                      do_convert_rgb=True, **IMAGENET).save_pretrained(out["dino"])

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=64, patch_size=16)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=99)
    out["siglip"] = root / "siglip"
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(
        out["siglip"])
    SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(out["siglip"])
    out["metaclip"] = root / "metaclip"
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
              ).save_pretrained(out["metaclip"])
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}
                       ).save_pretrained(out["metaclip"])

    net = real._pidinet_module().pidinet()
    out["pidinet"] = root / "table5_pidinet_tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               out["pidinet"])
    return out


@pytest.fixture
def env(ckpts):
    """The checkpoints as the settings give them: each from its SVP_COVT_<NAME>_CKPT."""
    paths = load({checkpoint_variable(n): str(p) for n, p in ckpts.items()}).checkpoints
    assert {n: paths[n] for n in ckpts} == ckpts
    return paths


EXPECTED = {  # target tensors and their per-sample shapes for the tiny checkpoints
    "sam": {"embed": (256, 64, 64), "masks": (8, 256, 256), "n_masks": ()},
    "depth": {"feats": (4, 32, 37, 37), "depth": (256, 256)},
    "dino": {"features": (1025, 32)},
    "pidinet": {"feats": (60, 256, 256), "edges": (256, 256)},
    "siglip": {"features": (1, 32)},
    "metaclip": {"features": (1, 24)},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_expert_targets_decode_and_gradients(env, name):
    cfg = ThoughtConfig.parse(name)
    expert = (real.SamExpert(cfg.count(name), env["sam"], points_per_side=4) if name == "sam"
              else real.real_expert(name, cfg.count(name), env[name]))
    shape = expert.shape()
    assert shape == real.real_head_shapes(cfg, env)[name]  # heads built before the expert loads fit
    t = expert.targets(images(2))
    assert {k: tuple(v.shape[1:]) for k, v in t.items()} == EXPECTED[name]
    assert set(expert.keys) == set(t) and set(expert.searched) <= set(t)
    assert all(v.shape[0] == 2 and not v.requires_grad for v in t.values())
    scored = t
    if name == "sam":
        assert 0 <= int(t["n_masks"].max()) <= 8
        # a random tiny SAM may find no mask, and then the loss is 0 by design (upstream's
        # rule): give each image one target mask so matching and gradients are exercised
        scored = dict(t, masks=t["masks"].clone(), n_masks=t["n_masks"].clamp_min(1))
        scored["masks"][:, 0, 64:192, 64:192] = 1.0
    z = torch.randn(2, shape.n_queries, shape.token_dim, requires_grad=True)
    loss = expert.loss(expert.decode(z, scored), scored)
    assert torch.isfinite(loss)
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    modules = [m for m in vars(expert).values() if isinstance(m, torch.nn.Module)]
    assert modules and all(p.grad is None and not p.requires_grad
                           for m in modules for p in m.parameters())
    again = expert.targets(images(2))  # frozen and deterministic: cacheable
    assert all(torch.allclose(again[k].float(), t[k].float()) for k in t)


@pytest.mark.slow
def test_real_sam_completes_a_compact_entry_exactly(env):
    """From cached masks, the real SAM expert runs only its encoder (no mask search) and
    gives the embedding of its full run; every expert declares the keys it returns."""
    expert = real.SamExpert(8, env["sam"], points_per_side=4)
    full = expert.targets(images(2))
    known = [{k: full[k][i] for k in expert.searched} for i in range(2)]
    calls = []
    expert.amg.generate = lambda *a, **k: calls.append(1)  # the search must not run
    got = expert.complete(images(2), known)
    assert not calls and set(got) == set(full) == set(expert.keys)
    assert all(torch.equal(got[k].to(full[k].dtype), full[k]) for k in full)
    assert set(EXPECTED["sam"]) == set(expert.keys)


def test_sam_architecture_is_read_from_the_checkpoint(ckpts):
    arch = real._sam_arch(torch.load(ckpts["sam"], weights_only=True), ckpts["sam"])
    assert arch == {"encoder_embed_dim": 32, "encoder_depth": 4, "encoder_num_heads": 2,
                    "encoder_global_attn_indexes": [1, 3]}
    with pytest.raises(ValueError, match="not a segment-anything SAM checkpoint"):
        real._sam_arch({"x": torch.zeros(1)}, "bad.pth")


def test_missing_checkpoint_names_the_variable(tmp_path):
    unset = load({}).checkpoints
    for name in SPECS:
        with pytest.raises(FileNotFoundError, match=checkpoint_variable(name)):
            real.real_expert(name, 4, unset[name])
    nowhere = load({"SVP_COVT_DINO_CKPT": str(tmp_path / "nowhere")}).checkpoints["dino"]
    with pytest.raises(FileNotFoundError, match="SVP_COVT_DINO_CKPT=.*no such file"):
        real.real_expert("dino", 4, nowhere)


def test_a_missing_expert_package_is_named_before_the_run(tmp_path, monkeypatch):
    """segment-anything / controlnet-aux / OpenCV missing: the settings check (which the
    recipe runs before launching) names the install commands, instead of a bare
    ModuleNotFoundError when the model loads."""
    import importlib.util

    from svp.common.settings import SettingsError

    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"x")
    env = {"SVP_COVT_BACKEND": "real", "SVP_COVT_EXPERTS": "sam:8",
           "SVP_COVT_SAM_CKPT": str(ckpt)}
    load(env).check_files()  # installed here: accepted
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "segment_anything" else found(n, *a))
    with pytest.raises(SettingsError, match=r"segment_anything, not installed: pip install "
                                            r"-c requirements/constraints.txt -e '\.\[covt\]'"):
        load(env).check_files()


def test_head_shapes_without_checkpoints_are_upstreams():
    shapes = real.real_head_shapes(ThoughtConfig.parse("sam,depth,dino,pidinet,siglip,metaclip"),
                                   load({}).checkpoints)
    assert {n: (s.token_dim, s.n_tokens, s.n_queries) for n, s in shapes.items()} == {
        "sam": (256, 8, 8), "depth": (1024, 4, 4), "dino": (1024, 4, 1025),
        "pidinet": (60, 4, 4), "siglip": (1024, 4, 1), "metaclip": (1024, 4, 1)}


def test_dino_input_upstream_pads_a_256_image_into_448(ckpts):
    """Upstream calls DINOv2's processor with crop_size 448 but keeps its shortest_edge 256:
    the 448 crop zero-pads the picture (black after normalisation) around it. full448 is a
    real 448 view. The two fingerprints differ, so a cache of one is refused by the other."""
    up = real.DinoExpert(4, ckpts["dino"], "upstream")
    full = real.DinoExpert(4, ckpts["dino"], "full448")
    img = images(1)  # 120 x 90
    a, b = up._pixels(img)[0], full._pixels(img)[0]
    assert a.shape == b.shape == (3, 448, 448)
    black = (-torch.tensor(real.IMAGENET_MEAN) / torch.tensor(real.IMAGENET_STD))[:, None]
    assert torch.allclose(a[:, 0, :], black.expand(3, 448), atol=1e-4)   # padded frame
    side = (448 - 256) // 2
    assert not torch.allclose(a[:, side + 10, 200], black[:, 0], atol=1e-2)  # the picture
    assert not torch.allclose(b[:, 0, :], black.expand(3, 448), atol=1e-2)   # no frame
    assert up.fingerprint() != full.fingerprint()
    with pytest.raises(ValueError, match="unknown DINO input"):
        real.DinoExpert(4, ckpts["dino"], "other")


def test_expert_pixels_are_transformers_450s(ckpts):
    """Upstream pins transformers 4.50.1, whose BitImageProcessor is the PIL one: a 120 x 90
    picture, resized to 341 x 256 and centred in the 448 frame, fills columns 54..394 (run
    against 4.50.1 itself outside the project: 0.0 difference; transformers 5's default
    torchvision processor fills 53..393, max difference 4.46)."""
    expert = real.DinoExpert(4, ckpts["dino"], "upstream")
    x = expert._pixels(images(1))[0]
    black = (-torch.tensor(real.IMAGENET_MEAN) / torch.tensor(real.IMAGENET_STD))
    picture = [c for c in range(448) if not torch.allclose(x[:, 224, c], black, atol=1e-4)]
    assert (picture[0], picture[-1], len(picture)) == (54, 394, 341)
    for name in ("siglip", "metaclip"):  # every processor-fed expert: the PIL backend
        assert type(real.PooledExpert(name, 4, ckpts[name]).processor).__name__.endswith("Pil")


def test_dino_input_setting_reaches_the_expert(ckpts):
    from svp.covt.experts import build_experts

    assert load({}).dino_input == "upstream"  # upstream's input by default
    cfg = ThoughtConfig.parse("dino")
    chosen = load({"SVP_COVT_DINO_INPUT": "full448"}).dino_input
    assert build_experts(cfg, "real", {"dino": ckpts["dino"]}, chosen)["dino"].input_mode == \
        "full448"


def test_depth_input_upstream_goes_through_256_then_518(ckpts):
    """Upstream's chain into Depth Anything: the picture squashed to 256 px (PIL bicubic),
    then Depth Anything's own OpenCV cubic resize to 518 and ImageNet normalisation (written
    out here with its steps); ``direct`` (ours) resizes the original straight to 518. The
    upstream input carries no more detail than 256 px; the fingerprints differ (a cache of
    one is refused by the other)."""
    import cv2

    up = real.DepthExpert(4, ckpts["depth"], "upstream")
    direct = real.DepthExpert(4, ckpts["depth"], "direct")
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (700, 900, 3), dtype=np.uint8))  # fine noise
    small = np.asarray(img.resize((256, 256), Image.BICUBIC), dtype=np.float64) / 255.0
    want = (cv2.resize(small, (518, 518), interpolation=cv2.INTER_CUBIC)
            - np.asarray(real.IMAGENET_MEAN)) / np.asarray(real.IMAGENET_STD)
    got = up._pixels([img])[0]
    assert got.shape == (3, 518, 518)
    assert torch.allclose(got, torch.from_numpy(want).permute(2, 0, 1).float(), atol=1e-5)
    ours = direct._pixels([img])[0]
    assert (ours - got).abs().mean() > 0.1  # a different picture of the same image
    t_up, t_direct = up.targets([img]), direct.targets([img])
    assert t_up["depth"].shape == t_direct["depth"].shape == (1, 256, 256)
    assert up.fingerprint() != direct.fingerprint()
    with pytest.raises(ValueError, match="unknown depth input"):
        real.DepthExpert(4, ckpts["depth"], "other")


def test_depth_input_setting_reaches_the_expert(ckpts):
    from svp.covt.experts import build_experts

    assert load({}).depth_input == "upstream"  # upstream's chain by default
    chosen = load({"SVP_COVT_DEPTH_INPUT": "direct"}).depth_input
    cfg = ThoughtConfig.parse("depth")
    built = build_experts(cfg, "real", {"depth": ckpts["depth"]}, "upstream", chosen)
    assert built["depth"].input_mode == "direct"


def test_sam_picture_and_decoding_are_upstreams(ckpts):
    """Upstream's SAM path: the picture resized to 256 x 256 with PIL's default (bicubic), and
    the thought tokens' masks through SAM's postprocess_masks (256 -> 1024 -> 256, bilinear),
    as its automatic-mask targets are. Written out here from upstream's
    decode_sam_embed_with_tokens; the direct 256 logits (ours before) differ."""
    import torch.nn.functional as F

    expert = real.SamExpert(4, ckpts["sam"], points_per_side=2)  # the search is not tested
    img = images(1)[0]
    assert np.array_equal(expert._input(img), np.asarray(img.resize((256, 256), Image.BICUBIC)))
    assert not np.array_equal(expert._input(img),
                              np.asarray(img.resize((256, 256), Image.BILINEAR)))
    t = expert.targets([img])
    torch.manual_seed(1)
    z = torch.randn(1, 4, 256)
    got = expert.decode(z, t)
    dec, pe = expert.sam.mask_decoder, expert.sam.prompt_encoder
    want = []
    for token in z[0]:
        low, _ = dec(image_embeddings=t["embed"][:1], image_pe=pe.get_dense_pe(),
                     sparse_prompt_embeddings=token[None, None, :],
                     dense_prompt_embeddings=pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
                     .expand(1, -1, 64, 64), multimask_output=False)
        up = F.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)
        want.append(F.interpolate(up, (256, 256), mode="bilinear", align_corners=False)[0, 0])
        direct = low[0, 0]
    assert torch.allclose(got[0], torch.stack(want), atol=1e-5)
    assert not torch.allclose(got[0, -1], direct, atol=1e-3)
