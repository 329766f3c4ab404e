"""A page to look at a served skill model: ``python -m svp.serve.page --base_url URL``.

A gradio app (the UI library ms-swift's own ``swift app`` uses) that talks to any endpoint
of ``python -m svp.serve`` (or any OpenAI-compatible one) over HTTP, so it works for a model
served anywhere: upload a picture, ask, and see the answer as the model wrote it, the picture
with the crop boxes (pixel boxes, numbered in call order) or the decoded masks overlaid with
their labels, the crops in order, the decoded visual-thought maps of a CoVT model ("thought
maps", sent as ``{"svp": {"maps": true}}``), and the raw ``svp`` field. "Start of the
answer" continues an answer (its calls are cut first), which is how to hand a model a call
and look at what it does with the crop. Nothing here imports ms-swift or a model.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys

import numpy as np
from PIL import Image

TITLE = "swift-vlm-plugins: a served skill model"


def _data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _picture(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def annotations(field: dict, size: tuple[int, int]) -> list[tuple]:
    """The ``svp`` field as AnnotatedImage's (box or mask, label) pairs: crop boxes in the
    picture's pixels, labelled ``crop k``; masks decoded from their RLE, labelled as the
    model labelled them (``mask k`` when it did not)."""
    out: list[tuple] = []
    w, h = size
    for k, call in enumerate(field.get("calls") or [], 1):
        x1, y1, x2, y2 = call["box_pixels"]
        box = (max(0, int(x1)), max(0, int(y1)), min(w, int(round(x2))), min(h, int(round(y2))))
        out.append((box, f"crop {k}"))
    masks = field.get("masks") or []
    if masks:
        from pycocotools import mask as mask_utils

        for k, m in enumerate(masks, 1):
            rle = {"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()}
            out.append((mask_utils.decode(rle).astype(np.float32),
                        m.get("label") or f"mask {k}"))
    return out


def ask(base_url: str, api_key: str, model: str, image, question: str, prefix: str,
        max_tokens: int, maps: bool = False):
    """One request; returns the page's outputs (answer, annotated picture, crops and maps,
    field)."""
    from openai import APIConnectionError, APIStatusError, OpenAI

    if image is None:
        return "Upload a picture first.", None, [], {}
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _data_url(image)}},
        {"type": "text", "text": question or ""}]}]
    if prefix:
        messages.append({"role": "assistant", "content": prefix})
    client = OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=600)
    try:
        res = client.chat.completions.create(
            model=model, messages=messages, temperature=0, max_tokens=int(max_tokens),
            extra_body={"svp": {"maps": True}} if maps else None)
    except APIStatusError as exc:
        body = exc.response.json() if exc.response is not None else {}
        return (f"The server refused the request ({exc.status_code}): "
                f"{body.get('message', exc)}"), None, [], {}
    except APIConnectionError as exc:
        return f"No server at {base_url} ({exc})", None, [], {}
    choice = res.choices[0]
    field = choice.model_dump().get("svp") or {}
    answer = (prefix or "") + (choice.message.content or "")
    crops = [(_picture(c["image"]), f"crop {k}: {call['box_pixels']}")
             for k, (c, call) in enumerate(zip(field.get("crops") or [], field.get("calls")
                                               or [], strict=False), 1)]
    crops += [(_picture(m["image"]), f"{m['expert']} thought map: loss {m['loss']:.4g} "
               f"(zero tokens {m['zero_token_loss']:.4g})") for m in field.get("maps") or []]
    return answer, (image.convert("RGB"), annotations(field, image.size)), crops, field


def models(base_url: str, api_key: str) -> list[str]:
    from openai import OpenAI

    try:
        client = OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=10)
        return [m.id for m in client.models.list().data]
    except Exception:  # noqa: BLE001 - the page still opens; the dropdown says why
        return []


def build(base_url: str, api_key: str = ""):
    """The gradio Blocks of the page."""
    import gradio as gr

    names = models(base_url, api_key)
    with gr.Blocks(title=TITLE) as page:
        gr.Markdown(f"## {TITLE}\nEndpoint: `{base_url}`"
                    + ("" if names else " (not answering: start `python -m svp.serve`)"))
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(names, value=names[0] if names else None, label="model",
                                    elem_id="model", allow_custom_value=True)
                image = gr.Image(type="pil", label="picture", elem_id="picture")
                question = gr.Textbox(label="question", elem_id="question")
                prefix = gr.Textbox(label="start of the answer (optional: the model goes on "
                                          "from it; its calls are cut first)", elem_id="prefix")
                max_tokens = gr.Slider(1, 2048, value=256, step=1, label="max new tokens",
                                       elem_id="max_tokens")
                maps = gr.Checkbox(label="thought maps (CoVT: decode the answer's visual "
                                         "thoughts)", elem_id="maps")
                go = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(label="answer (as the model wrote it)", lines=6,
                                    elem_id="answer")
                annotated = gr.AnnotatedImage(label="crop boxes / masks", elem_id="annotated")
                crops = gr.Gallery(label="crops in call order / thought maps", columns=4,
                                   elem_id="crops")
                raw = gr.JSON(label="svp field", elem_id="field")
        go.click(lambda *a: ask(base_url, api_key, *a),
                 inputs=[model, image, question, prefix, max_tokens, maps],
                 outputs=[answer, annotated, crops, raw])
    return page


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m svp.serve.page", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--base_url", default="http://127.0.0.1:8000/v1",
                    help="the OpenAI endpoint of a served model (…/v1)")
    ap.add_argument("--api_key", default="", help="the server's --api_key, if it has one")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        page = build(args.base_url, args.api_key)
    except ImportError as exc:
        print(f"error: the page needs gradio ({exc}): pip install -e '.[serve]'",
              file=sys.stderr)
        return 2
    page.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
