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


def test_ms_swift_app_chats_with_the_served_model(served, tiny_neo, tmp_path):
    """ms-swift's own chat page (``swift app --base_url``, run on gradio 6 by
    ``python -m svp.serve.swift_app``) in a real browser: a picture uploaded and a question
    asked through its UI come back with the answer the API gives for the same request."""
    from playwright.sync_api import sync_playwright

    from tests.serve.conftest import browser_page, start_swift_app

    link = tmp_path / served.model  # ms-swift names the served model by this folder
    link.symlink_to(tiny_neo(2))
    picture = Image.fromarray(np.random.default_rng(7).integers(0, 255, (80, 120, 3),
                                                                 np.uint8))
    path = tmp_path / "picture.png"
    picture.save(path)
    api = served.client().chat.completions.create(
        model="tiny", temperature=0, max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(picture)}},
            {"type": "text", "text": "Describe the picture."}]}]).choices[0].message.content
    proc, url = start_swift_app(served.url + "/v1", link, tmp_path / "app.log",
                                "--task_type", "causal_lm", "--is_multimodal", "true",
                                "--max_new_tokens", "8", "--temperature", "0")
    try:
        with sync_playwright() as p:
            browser, page = browser_page(p)
            try:
                page.goto(url)
                page.locator("input[type=file]").set_input_files(str(path))
                page.wait_for_selector(".user-row .component img", timeout=60_000)
                box = page.get_by_label("Input")
                box.fill("Describe the picture.")
                box.press("Enter")
                shown = ".bot-row .message-content"
                try:  # streamed: wait until the answer is all there
                    page.wait_for_function(
                        "([sel, want]) => { const m = document.querySelectorAll(sel);"
                        " return m.length && m[m.length - 1].innerText.trim() === want; }",
                        arg=[shown, api.strip()], timeout=120_000)
                except Exception:  # noqa: BLE001 - fail with what the page shows
                    pytest.fail(f"the app shows {page.locator(shown).all_inner_texts()}, "
                                f"the API answered {api!r}")
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
