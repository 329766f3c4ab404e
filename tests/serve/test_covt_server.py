"""CoVT served unmerged: ``python -m svp.serve --skill covt --model_type covt_qwen2_5_vl``
loads the model type with its heads and thought tokens (stand-in experts here) and answers
as ms-swift's own engine does in a fresh process on the same request."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, offline_env
from tests.serve.conftest import start_server, stop_server
from tests.serve.test_crop_server import data_url

ENV = {"SVP_COVT_BACKEND": "standin", "SVP_COVT_EXPERTS": "sam,depth"}


@pytest.fixture(scope="module")
def covt_model(tmp_path_factory, tiny_model):
    """The tiny Qwen2.5-VL loaded as the CoVT model type and saved: its thought tokens and
    heads (covt/heads.safetensors) are on disk, so every process loads the same heads."""
    out = tmp_path_factory.mktemp("covt_model") / "model"
    code = ("import sys, torch; torch.manual_seed(0); from swift.model import "
            "get_model_processor; from svp.covt.swift_plugin import register, MODEL_TYPE; "
            "register(); m, p = get_model_processor(sys.argv[1], model_type=MODEL_TYPE, "
            "torch_dtype=torch.float32); m.save_pretrained(sys.argv[2]); "
            "p.save_pretrained(sys.argv[2])")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_model("qwen2_5_vl")), str(out)],
                          cwd=REPO, env=offline_env(**ENV), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "covt" / "heads.safetensors").is_file()
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, covt_model):
    log = tmp_path_factory.mktemp("covt_server") / "server.log"
    model = covt_model
    server = start_server(["--skill", "covt", "--model", str(model), "--model_type",
                           "covt_qwen2_5_vl"], log, **ENV)
    yield server, model
    stop_server(server)


# an answer that has started its visual thought: the served model must read the anchors and
# pads as the single tokens its model type adds (a plain Qwen2.5-VL splits them into pieces)
PREFILL = ("<think> Because the segmentation of the image is <|anchor_start|>"
           + "<|sam_pad|>" * 8 + "<|anchor_end|>")


def _request(picture) -> dict:
    """Greedy, the picture and a question, the answer continued from PREFILL."""
    return dict(model="tiny", temperature=0, max_tokens=8, messages=[
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(picture)}},
            {"type": "text", "text": "What shape is this?"}]},
        {"role": "assistant", "content": PREFILL}])


def _ask(server, picture, **kw):
    return server.client().chat.completions.create(**_request(picture), **kw)


def test_answers_as_the_engine_alone(served, tmp_path):
    server, model = served
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (84, 112, 3),
                                                                 dtype=np.uint8))
    res = _ask(server, picture)
    assert res.choices[0].model_dump()["svp"] == {"skill": "covt"}
    # the reference in a fresh process (this one may hold other plugins' patches)
    picture_path = tmp_path / "picture.png"
    picture.save(picture_path)
    code = (
        "import json, sys; from PIL import Image; "
        "from swift.infer_engine import InferRequest, RequestConfig, TransformersEngine; "
        "from svp.covt.swift_plugin import register; register(); "
        "engine = TransformersEngine(sys.argv[1], model_type='covt_qwen2_5_vl'); "
        "out = engine.infer([InferRequest(messages=[{'role': 'user', 'content': "
        "'<image>What shape is this?'}, {'role': 'assistant', 'content': sys.argv[3]}], "
        "images=[Image.open(sys.argv[2]).convert('RGB')])], "
        "RequestConfig(max_tokens=8, temperature=0))[0]; "
        "print(json.dumps([out.usage.prompt_tokens, out.choices[0].message.content]))")
    proc = subprocess.run([sys.executable, "-c", code, str(model), str(picture_path), PREFILL],
                          cwd=REPO, env=offline_env(**ENV), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    prompt_tokens, content = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res.usage.prompt_tokens == prompt_tokens  # the thought tokens read as one each
    assert res.choices[0].message.content == content




def test_thought_maps_on_request_equal_the_decoding_tool(served, tmp_path):
    """``extra_body={"svp": {"maps": True}}``: the answer's thought tokens decoded into
    maps, equal to ``data_tools/covt_decode.py`` on the same answer in a fresh process."""
    import asyncio
    import base64
    import io

    server, model = served
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (84, 112, 3),
                                                                 dtype=np.uint8))
    res = _ask(server, picture, extra_body={"svp": {"maps": True}})
    field = res.choices[0].model_dump()["svp"]
    assert [m["expert"] for m in field["maps"]] == ["sam"]  # the answer holds sam's group
    assert field["missing"] == ["depth"]
    picture_path = tmp_path / "picture.png"
    picture.save(picture_path)
    proc = subprocess.run([sys.executable, "data_tools/covt_decode.py", "--model", str(model),
                           "--image", str(picture_path), "--question", "What shape is this?",
                           "--answer", PREFILL + res.choices[0].message.content,
                           "--out", str(tmp_path / "decoded")], cwd=REPO,
                          env=offline_env(**ENV), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tool = json.loads((tmp_path / "decoded" / "decoded.json").read_text())["experts"]["sam"]
    ours = field["maps"][0]
    assert ours["loss"] == pytest.approx(tool["loss"], rel=1e-5)
    assert ours["zero_token_loss"] == pytest.approx(tool["zero_token_loss"], rel=1e-5)
    served_png = Image.open(io.BytesIO(base64.b64decode(ours["image"].split(",", 1)[1])))
    assert np.array_equal(np.asarray(served_png), np.asarray(Image.open(tool["png"])))

    # while other requests generate, a replay waits for the engine: every answer and every
    # map equal to its own asked alone
    plain = _ask(server, picture).choices[0].message.content

    async def together():
        client = server.async_client()
        maps = {"extra_body": {"svp": {"maps": True}}}
        return await asyncio.gather(*[
            client.chat.completions.create(**_request(picture), **(maps if i % 2 else {}))
            for i in range(6)])

    for i, r in enumerate(asyncio.run(together())):
        assert r.choices[0].message.content == plain
        if i % 2:
            assert r.choices[0].model_dump()["svp"]["maps"][0]["loss"] == \
                pytest.approx(ours["loss"], rel=1e-6)
        else:
            assert r.choices[0].model_dump()["svp"] == {"skill": "covt"}


def test_page_shows_the_thought_maps(served):
    """What the page's Ask button returns with "thought maps" ticked (the page's own
    ``ask``, over HTTP; the page itself is driven in a browser in the crop and mask server
    tests): the answer, and the decoded map in the gallery with its expert and losses."""
    from svp.serve.page import ask

    server, _ = served
    picture = Image.fromarray(np.random.default_rng(2).integers(0, 255, (168, 224, 3),
                                                                 dtype=np.uint8))
    answer, _, gallery, field = ask(server.url + "/v1", "", "tiny", picture,
                                    "What shape is this?", PREFILL, 8, True)
    assert answer.startswith(PREFILL) and [m["expert"] for m in field["maps"]] == ["sam"]
    assert len(gallery) == 1 and gallery[0][1].startswith("sam thought map: loss ")
    assert gallery[0][0].size[0] > picture.size[0]  # the panel: picture | decoded | expert
