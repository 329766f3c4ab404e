"""NEO served: ``python -m svp.serve --skill neo --model_type neo`` on the tiny NEO
checkpoint, several requests batched by ms-swift's transformers engine (pictures of
different sizes, so different numbers of image tokens per row), each equal to its answer
alone, streamed and not."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import start_server, stop_server
from tests.serve.test_crop_server import data_url


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_neo):
    log = tmp_path_factory.mktemp("neo_server") / "server.log"
    server = start_server(["--skill", "neo", "--model", str(tiny_neo(2)), "--model_type", "neo",
                           "--max_batch_size", "4"], log)
    yield server
    stop_server(server)


def _messages(i: int) -> list[dict]:
    rng = np.random.default_rng(i)
    picture = Image.fromarray(rng.integers(0, 255, (60 + 20 * i, 90 + 10 * i, 3), np.uint8))
    return [{"role": "user", "content": [{"type": "image_url",
                                          "image_url": {"url": data_url(picture)}},
                                         {"type": "text", "text": f"Describe picture {i}."}]}]


def test_batched_answers_equal_each_alone_and_stream(served):
    client = served.client()
    alone = [client.chat.completions.create(model="tiny", messages=_messages(i), temperature=0,
                                            max_tokens=8).choices[0].message.content
             for i in range(4)]

    async def together():
        c = served.async_client()
        return await asyncio.gather(*[c.chat.completions.create(
            model="tiny", messages=_messages(i), temperature=0, max_tokens=8)
            for i in range(4)])

    batched = [r.choices[0].message.content for r in asyncio.run(together())]
    assert batched == alone and all(alone)
    chunks = list(client.chat.completions.create(model="tiny", messages=_messages(0),
                                                 temperature=0, max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == alone[0]
    assert chunks[-1].choices[0].model_dump()["svp"] == {"skill": "neo"}
