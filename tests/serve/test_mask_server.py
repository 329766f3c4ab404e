"""The mask-token skill served: ``python -m svp.serve --skill masks --codec builtin:...`` on
the tiny Qwen2.5-VL with the mask vocabulary, called with the ``openai`` package. The masks
of the answer are decoded server-side with the codec and come back in ``choices[i].svp``
as COCO RLE, box and polygon at the picture's size, equal to the codec's own decoding."""

from __future__ import annotations

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
from tests.serve.test_crop_server import data_url


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model, trained_codec):
    from svp.masktok.codec.base import load_codec

    path, scenes = trained_codec
    spec = f"builtin:{path}"
    log = tmp_path_factory.mktemp("mask_server") / "server.log"
    server = start_server(["--skill", "masks", "--model", str(tiny_model("qwen2_5_vl")),
                           "--model_type", "qwen2_5_vl", "--template", "qwen2_5_vl",
                           "--codec", spec], log)
    yield server, load_codec(spec), scenes
    stop_server(server)


def _ask(server, image, prefill, **kw):
    return server.client().chat.completions.create(
        model="tiny", temperature=0, max_tokens=6,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "text", "text": "Please segment the shapes in this image."}]},
            {"role": "assistant", "content": prefill}], **kw)


def test_masks_decoded_server_side_as_coco_rle_box_and_polygon(served):
    from pycocotools import mask as mask_utils

    from svp.masktok.tokens import codes_to_text

    server, codec, scenes = served
    image, masks = _scene(scenes)
    codes = codec.encode(image, masks[:2])
    prefill = ("```json\n[" + ",\n".join(
        f'{{"mask_2d": "{codes_to_text(*map(int, c))}", "label": "shape {k}"}}'
        for k, c in enumerate(codes)) + "]\n```")
    res = _ask(server, image, prefill)
    field = res.choices[0].model_dump()["svp"]
    assert field["skill"] == "masks" and not field["no_target"]
    expected = codec.decode(image, codes)
    got = field["masks"][:2]
    assert [m["label"] for m in got] == ["shape 0", "shape 1"]
    assert [m["codes"] for m in got] == [[int(a), int(b)] for a, b in codes]
    for m, want in zip(got, expected, strict=True):
        rle = {"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()}
        mask = mask_utils.decode(rle).astype(bool)
        assert np.array_equal(mask, want) and m["area"] == int(want.sum()) > 0
        ys, xs = np.nonzero(want)
        assert m["box"] == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        h, w = want.shape
        poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(m["polygon"], h, w)))
        iou = (poly.astype(bool) & want).sum() / (poly.astype(bool) | want).sum()
        assert iou > 0.9, iou
    # streamed: the same field on the last chunk
    chunks = list(_ask(server, image, prefill, stream=True))
    last = chunks[-1].choices[0].model_dump()["svp"]
    assert [m["rle"] for m in last["masks"]] == [m["rle"] for m in field["masks"]]


def test_no_target_answer(served):
    """'No target.' (and whatever the model adds without mask tokens): no masks."""
    from svp.masktok.tokens import parse_gres_answer

    server, _, scenes = served
    res = _ask(server, _scene(scenes)[0], "No target.")
    field = res.choices[0].model_dump()["svp"]
    found = parse_gres_answer("No target." + res.choices[0].message.content)
    assert field["no_target"] == (not found) and len(field["masks"]) == len(found)


def _scene(scenes):
    image, masks = scenes[0]
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    return image.convert("RGB"), masks


@pytest.fixture(scope="module")
def page_url(served, tmp_path_factory):
    server, _, _ = served
    proc, url = start_page(server.url + "/v1", tmp_path_factory.mktemp("page") / "page.log")
    yield url
    proc.terminate()
    proc.wait(30)


def test_page_overlays_the_masks_with_their_labels(served, page_url, tmp_path):
    """In a real browser: the masks of the answer drawn on the picture, with the labels the
    model gave them."""
    from playwright.sync_api import sync_playwright

    from svp.masktok.tokens import codes_to_text

    server, codec, scenes = served
    image, masks = _scene(scenes)
    image = image.resize((image.width * 3, image.height * 3), Image.NEAREST)  # to see it
    masks = np.stack([np.asarray(Image.fromarray(m).resize(image.size, Image.NEAREST))
                      for m in masks[:2]])
    codes = codec.encode(image, masks)
    prefill = ("```json\n[" + ",\n".join(
        f'{{"mask_2d": "{codes_to_text(*map(int, c))}", "label": "shape {k}"}}'
        for k, c in enumerate(codes)) + "]\n```")
    picture = tmp_path / "scene.png"
    image.save(picture)
    with sync_playwright() as p:
        browser, page = browser_page(p)
        try:
            shown = ask_on_page(page, page_url, picture, "Please segment the shapes.",
                                prefill, 6)
            assert shown.startswith(prefill)
            legend = page.locator("#annotated").inner_text()
            assert "shape 0" in legend and "shape 1" in legend
            page.screenshot(path=str(tmp_path / "mask_overlay.png"), full_page=True)
        finally:
            browser.close()
    keep_screenshot(tmp_path / "mask_overlay.png", "serve_mask_overlay.png")
