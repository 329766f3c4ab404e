"""The official SAMTok back-end, tested as far as possible without the released weights.

A small Hiera (same SAM2.1 heads, same key names, random weights) stands in for Hiera-L: it
is saved in the release's layout and loaded back through ``load_codec('samtok:DIR')``.
"""

from __future__ import annotations

import builtins
import json
import re

import numpy as np
import pytest
import torch

pytest.importorskip("sam2", reason="the samtok back-end needs the sam2 package (make installs it)")

from svp.masktok.codec import (
    load_codec,  # noqa: E402
    samtok,  # noqa: E402
)
from svp.masktok.codec.samtok import (  # noqa: E402
    ARCH_NAME,
    WEIGHTS_NAME,
    ResidualQuantizer,
    SamTokCodec,
    SamTokTokenizer,
    SamTokUnavailable,
)

# Small trunk (dims 8..64, five blocks, one global-attention block) with the release's neck,
# prompt encoder, mask decoder, memory modules and image size.
SMALL = ["model.image_encoder.trunk.embed_dim=8", "model.image_encoder.trunk.num_heads=1",
         "model.image_encoder.trunk.stages=[1,1,2,1]",
         "model.image_encoder.trunk.global_att_blocks=[3]",
         "model.image_encoder.trunk.window_spec=[8,4,4,4]",
         "model.image_encoder.neck.backbone_channel_list=[64,32,16,8]"]


def _scene():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    masks = np.zeros((3, 120, 160), bool)
    masks[0, 10:50, 20:80] = True
    masks[1, 60:110, 90:150] = True
    masks[2, 30:90, 40:70] = True
    return img, masks


@pytest.fixture(scope="module")
def small_release(tmp_path_factory):
    """A random small tokenizer saved as the release is: full state dict, 'model.sam2_model.*'."""
    torch.manual_seed(0)
    model = SamTokTokenizer(SMALL)
    for book in model.quantizer.codebooks:
        book.weight.data[:-1].normal_()
    out = tmp_path_factory.mktemp("samtok")
    torch.save(model.state_dict(), out / WEIGHTS_NAME)
    (out / ARCH_NAME).write_text(json.dumps({"hydra_overrides": SMALL}))
    return model, out


def test_release_architecture_and_key_layout():
    """SAM2.1 Hiera-L + query mask encoder + 2x256 codebooks, under the release's key names."""
    model = SamTokTokenizer()
    sd = model.state_dict()
    n_params = sum(p.numel() for p in model.parameters())
    assert 220e6 < n_params < 235e6  # Hiera-L SAM2.1 (~224M) + mask encoder (~3.3M)
    assert all(k.startswith(("model.sam2_model.", "quantizer.codebooks.")) for k in sd)
    for d in (0, 1):
        assert sd[f"quantizer.codebooks.{d}.weight"].shape == (257, 256)
        assert sd[f"quantizer.codebooks.{d}.cluster_size_ema"].shape == (256,)
        assert sd[f"quantizer.codebooks.{d}.embed_ema"].shape == (256, 256)
    assert sd["model.sam2_model.sam_mask_encoder.mask_tokens.weight"].shape == (1, 256)
    enc = [k for k in sd if k.startswith("model.sam2_model.sam_mask_encoder.")]
    enc_params = sum(sd[k].numel() for k in enc)
    assert 3.0e6 < enc_params < 3.6e6
    trunk = model.sam.image_encoder.trunk
    assert len(trunk.blocks) == 48 and trunk.blocks[0].dim == 144  # stages [2,6,36,4]
    assert model.sam.image_size == 1024 and model.sam.directly_add_no_mem_embed
    assert model.sam.sam_prompt_encoder.mask_input_size == (256, 256)


def test_load_encode_decode_round_trip(small_release):
    model, path = small_release
    codec = load_codec(f"samtok:{path}")
    assert isinstance(codec, SamTokCodec)
    img, masks = _scene()
    codes = codec.encode(img, masks)
    assert codes.shape == (3, 2) and codes.dtype == np.int64
    assert ((codes >= 0) & (codes < 256)).all()
    # the loaded codec is the saved model: same codes as the in-memory one
    assert (SamTokCodec(model).encode(img, masks) == codes).all()
    # the file path works as well as the directory
    assert (load_codec(f"samtok:{path / WEIGHTS_NAME}").encode(img, masks) == codes).all()
    out = codec.decode(img, codes)
    assert out.shape == (3, 120, 160) and out.dtype == bool
    logits = codec.decode_logits(img, codes)
    assert logits.shape == (3, 256, 256)
    # a missing second code decodes as upstream's embed_code does: as code 0
    alone = codec.decode_logits(img, [[codes[0, 0], -1]])
    assert alone.shape == (1, 256, 256)
    assert torch.equal(alone[0], codec.decode_logits(img, [[codes[0, 0], 0]])[0])
    assert codec.decode(img, np.zeros((0, 2))).shape == (0, 120, 160)
    assert codec.encode(img, masks[:0]).shape == (0, 2)


def test_encode_box_is_used_and_defaults_to_mask_box(small_release):
    model, _ = small_release
    codec = SamTokCodec(model)
    img, masks = _scene()
    derived = codec.encode(img, masks[:1])
    # the mask's box as torchvision's masks_to_boxes gives it (x2/y2 = last pixel), which
    # is what SAMTok's data scripts prompt the encoder with
    from torchvision.ops import masks_to_boxes as tv_boxes

    box = tv_boxes(torch.from_numpy(masks[:1])).numpy()
    explicit = codec.encode(img, masks[:1], boxes=box)
    assert (derived == explicit).all()
    seen = []
    real = model.encode_latent

    def spy(top, m, boxes_norm):
        seen.append(boxes_norm.clone())
        return real(top, m, boxes_norm)

    model.encode_latent = spy
    try:
        codec.encode(img, masks[:1])
    finally:
        del model.encode_latent
    h, w = masks.shape[1:]
    assert torch.allclose(seen[0], torch.from_numpy(box) / torch.tensor([w, h, w, h]))
    # the prompts reach z: a different box moves the latent
    top, _ = model.features(torch.zeros(1, 3, 1024, 1024))
    m = torch.from_numpy(masks[:1, None])
    z1 = model.encode_latent(top, m, torch.tensor([[0.1, 0.1, 0.5, 0.4]]))
    z2 = model.encode_latent(top, m, torch.tensor([[0.5, 0.5, 0.9, 0.9]]))
    assert not torch.allclose(z1, z2)


def test_bad_inputs_name_the_problem(small_release):
    model, _ = small_release
    codec = SamTokCodec(model)
    img, masks = _scene()
    with pytest.raises(ValueError, match="do not match image"):
        codec.encode(img, masks[:, :50])
    empty = masks.copy()
    empty[1] = False
    with pytest.raises(ValueError, match="empty mask"):
        codec.encode(img, empty)
    with pytest.raises(ValueError, match="0..255"):
        codec.decode(img, [[256, 3]])
    with pytest.raises(ValueError, match="0..255"):
        codec.decode(img, [[-1, 3]])


def test_prompt_encoder_runs_in_fp32_under_autocast(small_release):
    """Under bf16 autocast (CUDA in practice; emulated here on CPU) the prompt encoder still
    computes in fp32, as upstream's encode_mask_box_input: its outputs are fp32 and equal the
    ones computed without autocast."""
    model, _ = small_release
    img, masks = _scene()
    top, _ = model.features(torch.zeros(1, 3, 1024, 1024))
    m = torch.from_numpy(masks[:1, None])
    box = torch.tensor([[0.1, 0.1, 0.5, 0.4]])
    outs = []
    hook = model.sam.sam_prompt_encoder.register_forward_hook(
        lambda mod, args, out: outs.append((torch.is_autocast_enabled("cpu"), out)))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.encode_latent(top, m, box)
        model.encode_latent(top, m, box)
    finally:
        hook.remove()
    (auto_on, (sparse, dense)), (_, (sparse_ref, dense_ref)) = outs
    assert not auto_on and sparse.dtype == dense.dtype == torch.float32
    assert torch.equal(sparse, sparse_ref) and torch.equal(dense, dense_ref)


def test_quantizer_is_residual_and_reads_minus_one_as_code_zero():
    q = ResidualQuantizer(256, 4, 2)
    torch.manual_seed(1)
    for book in q.codebooks:
        book.weight.data[:-1].normal_()
    z = torch.randn(5, 4)
    codes = q.quantize(z)
    b0, b1 = (book.weight[:-1] for book in q.codebooks)
    first = torch.cdist(z, b0).argmin(1)
    assert (codes[:, 0] == first).all()
    second = torch.cdist(z - b0[first], b1).argmin(1)
    assert (codes[:, 1] == second).all()
    assert torch.allclose(q.embed(codes), b0[first] + b1[second])
    only_first = codes.clone()
    only_first[:, 1] = -1
    # upstream's embed_code: (c0, -1) -> e0[c0] + e1[0]; the caller's codes stay as given
    assert torch.allclose(q.embed(only_first), b0[first] + b1[0])
    assert (only_first[:, 1] == -1).all()


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(SamTokUnavailable, match=WEIGHTS_NAME):
        load_codec(f"samtok:{tmp_path}")
    with pytest.raises(SamTokUnavailable, match="does not exist"):
        load_codec(f"samtok:{tmp_path / 'nope'}")


def test_wrong_state_dict_is_rejected_with_keys(small_release, tmp_path):
    model, path = small_release
    (tmp_path / ARCH_NAME).write_text((path / ARCH_NAME).read_text())
    sd = model.state_dict()
    broken = {k: v for k, v in sd.items() if "sam_mask_encoder" not in k}
    broken["something.else"] = torch.zeros(1)
    torch.save({"state_dict": broken}, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"missing keys.*sam_mask_encoder.*unexpected keys"):
        load_codec(f"samtok:{tmp_path}")
    resized = dict(sd)
    resized["quantizer.codebooks.0.weight"] = torch.zeros(1025, 256)
    torch.save(resized, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"shape mismatch.*codebooks\.0\.weight"):
        load_codec(f"samtok:{tmp_path}")
    (tmp_path / WEIGHTS_NAME).write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_codec(f"samtok:{tmp_path}")


def test_missing_sam2_package_is_named(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_sam2(name, *args, **kwargs):
        if name == "sam2" or name.startswith("sam2."):
            raise ImportError("No module named 'sam2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sam2)
    with pytest.raises(SamTokUnavailable, match="--no-build-isolation sam2"):
        samtok.SamTokCodec.load(tmp_path)


def test_data_tools_run_on_the_samtok_back_end(small_release, tmp_path, capsys):
    """tokenize_gres -> eval_gres with ``--codec samtok:DIR``: the codes written by the one
    tool decode, in the other, to exactly what the codec itself decodes."""
    from data_tools import eval_gres, tokenize_gres
    from svp.masktok.coco import rle_to_mask
    from svp.masktok.tokens import parse_gres_answer
    from svp.testing.synthetic import write_synthetic_gres

    _, path = small_release
    sg = write_synthetic_gres(tmp_path / "sg", n_images=4, seed=3)
    spec = f"samtok:{path}"
    assert tokenize_gres.main([
        "--grefs", str(sg["grefs"]), "--instances", str(sg["instances"]),
        "--image-root", str(sg["images"]), "--codec", spec, "--split", "train",
        "--out", str(tmp_path / "o")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "gres_train.jsonl").read_text().splitlines()]
    assert rows and any(not r["no_target"] for r in rows)
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"id": r["id"], "response": r["conversations"][1]["value"]})
                            + "\n" for r in rows))
    assert eval_gres.main(["--pred", str(pred), "--gt", str(tmp_path / "o" / "gres_train.jsonl"),
                           "--image-root", str(sg["images"]), "--codec", spec,
                           "--out", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["metrics"]["samples"] == len(rows) and res["metrics"]["N-acc"] in (100.0, None)
    codec = load_codec(spec)
    from PIL import Image
    for r, s in zip(rows, res["samples"], strict=True):
        if r["no_target"]:
            continue
        codes = [list(it.codes) for it in parse_gres_answer(r["conversations"][1]["value"])]
        img = Image.open(sg["images"] / r["image"])
        union = codec.decode(img, codes).any(0)
        truth = rle_to_mask(r["target_rle"])
        assert s["intersection"] == int((union & truth).sum())
        assert s["union"] == int((union | truth).sum())


def test_architecture_file_is_read_as_data(small_release, tmp_path):
    """A codec folder is data (often downloaded): its samtok_arch.json may change sizes, never
    name a callable. The attack that worked: a node replaced by ``{_target_:
    shutil.copyfile, src, dst}``, which hydra's instantiate ran (copying a file out of the
    folder) before failing on something unrelated."""
    import shutil

    _, release = small_release
    trunk = "model.image_encoder.trunk"
    secret = tmp_path / "codec" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("from the folder")
    shutil.copy(release / WEIGHTS_NAME, secret.parent / WEIGHTS_NAME)
    outside = tmp_path / "outside.txt"
    attacks = {
        f"++{trunk}.extra={{_target_: shutil.copyfile, src: '{secret}', dst: '{outside}'}}":
            "only changes of existing keys",
        f"{trunk}.window_spec={{_target_: shutil.copyfile, src: '{secret}', dst: '{outside}'}}":
            "values must be numbers",
        f"{trunk}._target_=shutil.copyfile": "keys starting with '_'",
        f"+{trunk}.extra._target_=os.makedirs": "only changes of existing keys",
        f"~{trunk}.embed_dim": "only changes of existing keys",
        f"{trunk}.embed_dim=${{oc.env:HOME}}": "values must be numbers",
        "hydra.run.dir=/tmp/x": "or under 'hydra' are not settings",
    }
    for override, why in attacks.items():
        (secret.parent / ARCH_NAME).write_text(json.dumps({"hydra_overrides": [*SMALL,
                                                                               override]}))
        with pytest.raises(samtok.UnsafeArchitecture, match=re.escape(why)):
            load_codec(f"samtok:{secret.parent}")
        assert not outside.exists(), override
    for doc in ({"hydra_overrides": "x=1"}, {"hydra_overrides": SMALL, "run": "x"}, [1]):
        (secret.parent / ARCH_NAME).write_text(json.dumps(doc))
        with pytest.raises(samtok.UnsafeArchitecture, match="nothing else"):
            load_codec(f"samtok:{secret.parent}")
    # the second line of defence: whatever reaches compose, the resolved config must name
    # exactly sam2's own callables before anything is instantiated
    with pytest.raises(samtok.UnsafeArchitecture, match="change which callables"):
        SamTokTokenizer([*SMALL, f"{trunk}._target_=shutil.copyfile",
                         f"+{trunk}.src={secret}", f"+{trunk}.dst={outside}"])
    assert not outside.exists()
    # plain size overrides still load (the small release itself)
    (secret.parent / ARCH_NAME).write_text(json.dumps({"hydra_overrides": SMALL}))
    assert isinstance(load_codec(f"samtok:{secret.parent}"), SamTokCodec)
