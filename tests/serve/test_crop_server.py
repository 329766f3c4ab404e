"""The crop-tool skill served: ``python -m svp.serve --skill crop`` on the tiny Qwen2.5-VL,
started as a user starts it and called with the ``openai`` package. The loop runs inside the
server (a call is cut with the training CropPolicy and generation continues), the answer
equals the in-process loop's, streaming equals not streaming, 32 concurrent requests each
equal their answer alone, and bad requests get a 4xx that says what to fix while the server
keeps serving."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import (
    ask_on_page,
    browser_page,
    keep_screenshot,
    start_page,
    start_server,
    stop_server,
)

KEY = "test-key"
QUESTION = "What is on the left?"
PREFILL = "<think>look <tool_call>[10, 20, 200, 180]</tool_call>"


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def scene(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("images")
    scene().save(root / "scene.png")
    model = tiny_model("qwen2_5_vl")
    server = start_server(["--skill", "crop", "--model", str(model), "--model_type",
                           "qwen2_5_vl", "--image_root", str(root), "--api_key", KEY,
                           "--max_batch_size", "16"], root.parent / "crop_server.log")
    yield server, root, model
    stop_server(server)


def ask(client, image_url: str, prefill: str | None = None, max_tokens: int = 12,
        question: str = QUESTION, **kw):
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url":
                                                                                 image_url}},
                                             {"type": "text", "text": question}]}]
    if prefill:
        messages.append({"role": "assistant", "content": prefill})
    return client.chat.completions.create(model="tiny", messages=messages, temperature=0,
                                          max_tokens=max_tokens, **kw)


def test_crop_is_cut_server_side_as_the_in_process_loop_does(served):
    """A continued answer that ends with a call: the server cuts the crop with the training
    policy (the pixels of CropPolicy.execute), the model continues after it, and the text,
    boxes and crop equal CropToolInference's in this process on the same model."""
    from svp.croptool.geometry import CropPolicy
    from svp.croptool.swift_inference import CropToolInference

    server, root, model = served
    res = ask(server.client(KEY), data_url(scene()), PREFILL)
    field = res.choices[0].model_dump()["svp"]
    assert field["skill"] == "crop" and len(field["calls"]) == 1 and field["rounds"] == 1
    call = field["calls"][0]
    policy = CropPolicy("qwen2_5_vl")
    crop, px, _ = policy.execute(scene(), (10, 20, 200, 180))
    assert call == {"box_model": [10.0, 20.0, 200.0, 180.0],
                    "box_pixels": [round(v, 2) for v in px]}
    got = Image.open(io.BytesIO(base64.b64decode(field["crops"][0]["image"].split(",")[1])))
    assert np.array_equal(np.asarray(got), np.asarray(crop))
    local = CropToolInference(str(model), model_type="qwen2_5_vl", max_new_tokens=12)
    alone = local.generate(scene(), QUESTION, assistant_prefix=PREFILL)
    assert res.choices[0].message.content == alone.text.replace("</tool_call><image>",
                                                                 "</tool_call>")[len(PREFILL):]
    assert res.usage.completion_tokens == 12 and res.choices[0].finish_reason == "length"


def test_stream_equals_the_answer_and_ends_with_the_field(served):
    server, root, _ = served
    client = server.client(KEY)
    whole = ask(client, str(root / "scene.png"), PREFILL)  # a local path under the root
    chunks = list(ask(client, str(root / "scene.png"), PREFILL, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == \
        whole.choices[0].message.content
    last = chunks[-1].choices[0].model_dump()
    assert last["finish_reason"] == "length" and last["svp"]["calls"] == \
        whole.choices[0].model_dump()["svp"]["calls"]
    assert all("svp" not in c.choices[0].model_dump() for c in chunks[:-1])


def test_32_concurrent_requests_each_equal_their_answer_alone(served):
    """Greedy answers of 32 clients at once (the engine batches them, up to 16 at a time,
    rounds of different requests mixed) equal each request's answer asked alone."""
    server, _, _ = served
    cases = [(data_url(scene(i % 4)), PREFILL if i % 2 else None, f"Question {i}?")
             for i in range(32)]
    alone = [ask(server.client(KEY), u, p, question=q).choices[0].message.content
             for u, p, q in cases]

    async def together():
        client = server.async_client(KEY)
        return await asyncio.gather(*[
            client.chat.completions.create(
                model="tiny", temperature=0, max_tokens=12,
                messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": u}},
                    {"type": "text", "text": q}]}] + (
                    [{"role": "assistant", "content": p}] if p else []))
            for u, p, q in cases])

    answers = [r.choices[0].message.content for r in asyncio.run(together())]
    assert answers == alone


def _broken_png() -> str:
    """A PNG cut short after 200 bytes, well encoded: a file that is not a picture."""
    buf = io.BytesIO()
    scene().save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()[:200]).decode()


BROKEN_PNG = _broken_png()


@pytest.mark.parametrize("case,status,says", [
    ("malformed JSON", 400, "not valid JSON"),
    ("broken image", 400, "is not a picture PIL can read"),
    ("image over the pixel budget", 413, "over this server's limit"),
    ("unknown model", 404, "is not in the model_list"),
    ("path outside the root", 403, "outside the allowed image root"),
    ("remote URL, fetching off", 400, "remote URLs are off"),
    ("no API key", 401, "API key"),
])
def test_bad_requests_are_4xx_that_say_what_to_fix(served, case, status, says, tmp_path):
    server, root, _ = served
    body = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(scene())}},
        {"type": "text", "text": "hi"}]}]}
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    content = None
    image = body["messages"][0]["content"][0]["image_url"]
    if case == "malformed JSON":
        content = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}'
    elif case == "broken image":
        image["url"] = BROKEN_PNG
    elif case == "image over the pixel budget":
        image["url"] = data_url(Image.new("L", (8000, 6000)))
    elif case == "unknown model":
        body["model"] = "gpt-17"
    elif case == "path outside the root":
        scene().save(tmp_path / "elsewhere.png")
        image["url"] = str(root / ".." / tmp_path.name / "elsewhere.png")
    elif case == "remote URL, fetching off":
        image["url"] = "http://example.com/cat.png"
    elif case == "no API key":
        headers.pop("Authorization")
    r = httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=120,
                   **({"content": content} if content is not None else {"json": body}))
    assert r.status_code == status, r.text
    assert says in r.json()["message"], r.json()
    ok = ask(server.client(KEY), data_url(scene()), max_tokens=2)  # still serving
    assert ok.choices[0].message.content


# ----------------------------------------------------------------------------- the page
def shapes_scene() -> Image.Image:
    """Coloured shapes on a textured background (a picture a person can read)."""
    import random

    from svp.masktok.codec.scenes import draw_shapes_scene

    return draw_shapes_scene(random.Random(4), 640, 480, 5)[0].convert("RGB")


@pytest.fixture(scope="module")
def page_url(served, tmp_path_factory):
    server, _, _ = served
    proc, url = start_page(server.url + "/v1", tmp_path_factory.mktemp("page") / "page.log",
                           api_key=KEY)
    yield url
    proc.terminate()
    proc.wait(30)


def test_page_shows_the_crop_chain(served, page_url, tmp_path):
    """In a real browser: upload, ask with a call to start the answer; the page shows the
    answer the API gives for the same request, the box on the picture and the crop."""
    from playwright.sync_api import sync_playwright

    server, _, _ = served
    picture = tmp_path / "shapes.png"
    shapes_scene().save(picture)
    prefill = "<think>the round thing <tool_call>[50, 210, 200, 360]</tool_call>"
    api = ask(server.client(KEY), data_url(shapes_scene()), prefill)
    with sync_playwright() as p:
        browser, page = browser_page(p)
        try:
            shown = ask_on_page(page, page_url, picture, QUESTION, prefill, 12)
            assert shown == prefill + api.choices[0].message.content
            assert page.locator("#crops img").count() == 1
            assert "crop 1" in page.locator("#annotated").inner_text()
            page.screenshot(path=str(tmp_path / "crop_chain.png"), full_page=True)
        finally:
            browser.close()
    keep_screenshot(tmp_path / "crop_chain.png", "serve_crop_chain.png")
