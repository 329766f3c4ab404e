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
def served(tmp_path_factory, tiny_model):
    log = tmp_path_factory.mktemp("covt_server") / "server.log"
    model = tiny_model("qwen2_5_vl")
    server = start_server(["--skill", "covt", "--model", str(model), "--model_type",
                           "covt_qwen2_5_vl"], log, **ENV)
    yield server, model
    stop_server(server)


# an answer that has started its visual thought: the served model must read the anchors and
# pads as the single tokens its model type adds (a plain Qwen2.5-VL splits them into pieces)
PREFILL = ("<think> Because the segmentation of the image is <|anchor_start|>"
           + "<|sam_pad|>" * 8 + "<|anchor_end|>")


def test_answers_as_the_engine_alone(served, tmp_path):
    server, model = served
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (84, 112, 3),
                                                                 dtype=np.uint8))
    res = server.client().chat.completions.create(
        model="tiny", temperature=0, max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(picture)}},
            {"type": "text", "text": "What shape is this?"}]},
            {"role": "assistant", "content": PREFILL}])
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
