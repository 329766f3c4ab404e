"""``python -m svp.serve --skill crop|masks|covt|neo|plain <swift deploy arguments>``.

ms-swift's ``swift deploy`` server (``SwiftDeploy``: FastAPI, the OpenAI chat API, its
engines, ``--api_key``, adapters, logging) with three things of ours:

- **the skill's loop inside**: ``crop`` generates to ``</tool_call>``, cuts the crop with the
  training ``CropPolicy`` and continues, so a plain OpenAI client gets the answer the model
  gives with its crops; ``masks`` decodes the answer's mask tokens with the codec
  (``--codec``); ``covt`` and ``neo`` load their model types; ``plain`` is ms-swift as is;
- **the results beside the text**: the message content stays what the model wrote (our
  inserted crop tags removed) and the skill's results travel in one extra field of each
  choice, ``svp`` (:mod:`svp.serve.results`), so stock clients keep working;
- **request rules**: every picture is decoded before any model work and a bad one is a 4xx
  that says what to send (:mod:`svp.serve.media`); the server binds 127.0.0.1 unless
  ``--host`` says otherwise; remote image URLs are off unless ``--allow_remote_images``;
  local paths are read only under ``--image_root``.

Streaming: ``plain``/``covt``/``neo``/``masks`` stream as ms-swift does (``masks`` adds the
field to the last chunk); ``crop`` streams one chunk per round (the text up to a call, then
the text after its crop), the field on the last chunk.
"""

import argparse
import asyncio
import json
import re
import sys
from dataclasses import asdict
from http import HTTPStatus
from pathlib import Path

from svp.serve import settings
from svp.serve.media import MediaRules, RequestError, flatten_messages
from svp.serve.results import FIELD, covt_field, crop_field, masks_field

SKILLS = ("plain", "crop", "masks", "covt", "neo")
_CROP_TAG = "<image>"


def register_skill(skill: str) -> None:
    """What ``--external_plugins plugins/<x>.py`` registers for the skill's model (idempotent)."""
    if skill == "crop":
        from svp.croptool.swift_template import register
    elif skill == "masks":
        from svp.masktok.swift_plugin import register
    elif skill == "covt":
        from svp.covt.swift_plugin import register
    elif skill == "neo":
        from svp.neo.swift_plugin import register
    else:
        return
    register()


def served_text(text: str) -> str:
    """The crop loop's text without the ``<image>`` tags it put after executed calls: what
    the model wrote."""
    return text.replace("</tool_call>" + _CROP_TAG, "</tool_call>")


def _deploy_class():
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from swift.infer_engine import AdapterRequest
    from swift.infer_engine.protocol import (
        ChatCompletionRequest,
        ChatCompletionResponse,
        ChatCompletionResponseChoice,
        ChatCompletionResponseStreamChoice,
        ChatCompletionStreamResponse,
        ChatMessage,
        DeltaMessage,
        UsageInfo,
    )
    from swift.pipelines.infer.deploy import SwiftDeploy
    from swift.utils import get_logger

    logger = get_logger()

    class SkillDeploy(SwiftDeploy):
        """``SwiftDeploy`` whose chat endpoint runs the skill (see the module docstring)."""

        skill: str = "plain"
        rules: MediaRules = MediaRules()
        codec_spec: str | None = None
        max_crops: int = 8

        def __init__(self, args) -> None:
            super().__init__(args)
            self.app.add_exception_handler(RequestValidationError, self._bad_body)
            self.crop = self.codec = None
            if self.skill == "crop":
                from svp.croptool.swift_inference import CropToolInference

                self.crop = CropToolInference(engine=self.infer_engine,
                                              max_crops=self.max_crops)
            if self.skill == "masks":
                from svp.masktok.codec.base import load_codec

                self.codec = load_codec(self.codec_spec)
            # CoVT maps replay answers through the engine's own model: never mid-batch
            self.engine_lock = serialize_engine(self.infer_engine) \
                if self.skill == "covt" else None
            logger.info(f"svp.serve: skill {self.skill}, engine "
                        f"{type(self.infer_engine).__name__}, images: root "
                        f"{self.rules.root or 'none'}, remote "
                        f"{'on' if self.rules.fetch else 'off'}, at most "
                        f"{self.rules.max_pixels:,} px")

        def _install_auth_middleware(self):
            """ms-swift's key check, answering 401 (not 400) with what to send."""
            if not self.args.api_key:
                return

            @self.app.middleware("http")
            async def _auth(request: Request, call_next):
                if request.url.path not in self._AUTH_EXEMPT_PATHS and \
                        self._check_api_key(request):
                    return self.create_error_response(
                        HTTPStatus.UNAUTHORIZED, "API key missing or wrong: send the "
                        "header 'Authorization: Bearer <key>' with the server's --api_key")
                return await call_next(request)

        async def _bad_body(self, request: Request, exc: RequestValidationError):
            """A body FastAPI could not read, or a local path ms-swift's request parsing
            refused (it reads content-part paths itself, under SWIFT_MEDIA_ALLOWED_DIRS,
            which :func:`main` points at --image_root): a 4xx that says what to send."""
            problems = []
            for err in exc.errors():
                msg = str(err.get("msg", ""))
                path = re.search(r"media file (.+?): it is outside", msg)
                if path:
                    if self.rules.root is None:
                        return self.create_error_response(
                            400, f"image {path.group(1)}: local paths are off on this server: "
                            "send the picture as a data URL, or start the server with "
                            "--image_root DIR")
                    return self.create_error_response(
                        403, f"image {path.group(1)} is outside the allowed image root "
                        f"{self.rules.root}: send the picture as a data URL or put it under "
                        "the root")
                missing = re.match(r"Value error, value: (.*)", msg, re.S)
                if missing:
                    return self.create_error_response(
                        404, f"image {missing.group(1)[:200]!r}: no such file under the image "
                        f"root {self.rules.root}, and not a data URL")
                where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
                problems.append(f"{where or 'body'}: {msg}")
            text = "; ".join(problems[:5])
            if any(e.get("type") == "json_invalid" for e in exc.errors()):
                text = f"the request body is not valid JSON ({text})"
            return JSONResponse({"message": f"{text}: send an OpenAI chat completion request",
                                 "object": "error"}, status_code=400)

        # -------------------------------------------------------------------- the endpoint
        # (annotated for FastAPI, which reads the body and the raw request by these types)
        async def create_chat_completion(self, request: ChatCompletionRequest,
                                         raw_request: Request, *,
                                         return_cmpl_response: bool = False):
            error = self._check_api_key(raw_request)
            if error:
                return self.create_error_response(HTTPStatus.UNAUTHORIZED, error)
            error = await self._check_model(request)
            if error:
                return self.create_error_response(HTTPStatus.NOT_FOUND, error)
            error = self._check_max_logprobs(request)
            if error:
                return self.create_error_response(HTTPStatus.BAD_REQUEST, error)
            if return_cmpl_response:
                return await super().create_chat_completion(request, raw_request,
                                                            return_cmpl_response=True)
            infer_kwargs = self.infer_kwargs.copy()
            adapter_path = self.args.adapter_mapping.get(request.model)
            if adapter_path:
                infer_kwargs["adapter_request"] = AdapterRequest(request.model, adapter_path)
            infer_request, config = request.parse()
            self._set_request_config(config)
            try:
                maps = await self._wants_maps(raw_request)
                infer_request.messages, infer_request.images = flatten_messages(
                    infer_request.messages, infer_request.images, self.rules)
                if config.n != 1:
                    raise RequestError(400, f"n={config.n}: this server answers n=1 only")
            except RequestError as exc:
                return self.create_error_response(exc.status, str(exc))
            try:
                if self.crop is not None and infer_request.images:
                    return await self._crop(request, infer_request, config, infer_kwargs)
                res = await self.infer_async(infer_request, config, **infer_kwargs)
            except Exception as exc:  # noqa: BLE001 - as ms-swift: the message, not a 500
                logger.exception("svp.serve: generation failed")
                return self.create_error_response(HTTPStatus.BAD_REQUEST, str(exc))
            if config.stream:
                return StreamingResponse(self._stream(res, infer_request, maps),
                                         media_type="text/event-stream")
            body = self._with_field(res, infer_request)
            if maps:
                try:
                    body["choices"][0][FIELD] = await self._covt_maps(
                        infer_request, res.choices[0].message.content or "")
                except Exception as exc:  # noqa: BLE001 - the answer stands; say what failed
                    logger.exception("svp.serve: decoding the visual thoughts failed")
                    return self.create_error_response(
                        HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"the answer was generated, but decoding its visual thoughts "
                        f"failed: {exc}")
            return JSONResponse(body)

        # -------------------------------------------------------------------- skills
        def _field(self, text: str, infer_request) -> dict:
            if self.codec is None:
                return {"skill": self.skill}
            from svp.masktok.tokens import parse_gres_answer

            _, prefix = _split_prefill(infer_request.messages)
            items = parse_gres_answer(prefix + text)  # a continued answer: all of it
            image = infer_request.images[0] if infer_request.images else None
            if image is None or not items:
                return masks_field([], []) if image is not None else {"skill": "masks",
                                                                       "masks": []}
            masks = self.codec.decode(image, [it.codes for it in items])
            return masks_field(items, masks)

        def _with_field(self, res, infer_request) -> dict:
            body = asdict(res)
            for choice, raw in zip(body["choices"], res.choices, strict=True):
                choice[FIELD] = self._field(raw.message.content or "", infer_request)
            return body

        async def _stream(self, gen, infer_request, maps: bool = False):
            text = ""
            async for chunk in gen:
                body = asdict(chunk)
                choice = chunk.choices[0]
                text += choice.delta.content or ""
                if choice.finish_reason:
                    body["choices"][0][FIELD] = await self._covt_maps(infer_request, text) \
                        if maps else self._field(text, infer_request)
                yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        async def _wants_maps(self, raw_request: Request) -> bool:
            """``{"svp": {"maps": true}}`` in the body (the OpenAI client's ``extra_body``):
            decode the answer's visual thoughts (CoVT only; other skills ignore it)."""
            if self.skill != "covt":
                return False
            try:
                body = await raw_request.json()
            except ValueError:
                return False
            opts = body.get(FIELD) if isinstance(body, dict) else None
            if not (isinstance(opts, dict) and opts.get("maps")):
                return False
            if self.engine_lock is None:
                raise RequestError(400, "visual-thought maps need the transformers engine "
                                        "(--infer_backend transformers): the replay reads the "
                                        "model's hidden states, which this engine does not "
                                        "give")
            return True

        async def _covt_maps(self, infer_request, text: str) -> dict:
            """The answer (a continued one: all of it) replayed through the model and its
            thought tokens decoded, in a worker thread, never while the engine generates."""
            messages, prefix = _split_prefill(infer_request.messages)
            if not infer_request.images:
                return {"skill": "covt", "maps": [], "missing": [],
                        "note": "no picture in the request: nothing to decode against"}

            def work():
                from svp.covt.swift_plugin import decode_answer

                image = infer_request.images[0]
                with self.engine_lock:
                    results, missing = decode_answer(
                        self.infer_engine.model, self.infer_engine.template, image,
                        messages, prefix + text)
                return covt_field(results, missing, image)

            return await asyncio.get_running_loop().run_in_executor(None, work)

        async def _crop(self, request, infer_request, config, infer_kwargs):
            loop = self.crop
            messages, prefix = _split_prefill(infer_request.messages)
            state = loop.new_state(infer_request.images[0], messages, infer_request.images,
                                   prefix, config)
            start = len(served_text(state["text"]))  # a prefill's calls are cut already
            usage = {"prompt": None, "completion": 0}

            async def rounds():
                while not state["done"]:
                    before = served_text(state["text"])
                    round_request, round_config = loop._round(state)
                    out = await loop.engine.infer_async(round_request, round_config,
                                                        **infer_kwargs)
                    if usage["prompt"] is None:
                        usage["prompt"] = out.usage.prompt_tokens
                    usage["completion"] += out.usage.completion_tokens
                    loop._absorb(state, out)
                    yield served_text(state["text"])[len(before):]

            model = request.model
            if config.stream:
                async def chunks():
                    async for piece in rounds():
                        chunk = ChatCompletionStreamResponse(model, [
                            ChatCompletionResponseStreamChoice(
                                0, DeltaMessage(role="assistant", content=piece), None)])
                        yield f"data: {json.dumps(asdict(chunk), ensure_ascii=False)}\n\n"
                    result = loop._finish(state)
                    last = asdict(ChatCompletionStreamResponse(model, [
                        ChatCompletionResponseStreamChoice(
                            0, DeltaMessage(role="assistant", content=""),
                            "stop" if result.finished else "length")], self._usage(usage)))
                    last["choices"][0][FIELD] = crop_field(result)
                    yield f"data: {json.dumps(last, ensure_ascii=False)}\n\n"
                    yield "data: [DONE]\n\n"

                return StreamingResponse(chunks(), media_type="text/event-stream")
            async for _ in rounds():
                pass
            result = loop._finish(state)
            res = ChatCompletionResponse(model, [ChatCompletionResponseChoice(
                0, ChatMessage("assistant", served_text(result.text)[start:]),
                "stop" if result.finished else "length")], self._usage(usage))
            body = asdict(res)
            body["choices"][0][FIELD] = crop_field(result)
            return JSONResponse(body)

        @staticmethod
        def _usage(usage: dict):
            prompt = usage["prompt"] or 0
            return UsageInfo(prompt_tokens=prompt, completion_tokens=usage["completion"],
                             total_tokens=prompt + usage["completion"])

    return SkillDeploy


def serialize_engine(engine):
    """Make ms-swift's transformers engine take a lock around each batch it generates (its
    worker thread calls ``_infer``; a streamed batch holds the lock until its last chunk),
    and return the lock: work of ours on the same model and template (a CoVT replay) takes
    it too, so it never runs between a batch's steps. Other engines are left as they are
    (None)."""
    import threading

    infer = getattr(engine, "_infer", None)
    if infer is None or not hasattr(engine, "_infer_worker"):
        return None
    lock = threading.Lock()

    def locked(*args, **kwargs):
        with lock:
            out = infer(*args, **kwargs)
        if not kwargs["request_config"].stream:
            return out

        def stream():
            with lock:
                yield from out

        return stream()

    engine._infer = locked
    return lock


def _split_prefill(messages: list[dict]) -> tuple[list[dict], str]:
    """A conversation that ends with an assistant message asks for that answer to be
    continued (ms-swift's rule): the messages before it and its text."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1], str(messages[-1].get("content") or "")
    return messages, ""


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags; everything else is ``swift deploy``'s (``--model``, ``--adapters``,
    ``--infer_backend``, ``--port``, ``--api_key``, ...)."""
    ap = argparse.ArgumentParser(
        prog="python -m svp.serve",
        description="Serve a trained model with its skill behind the OpenAI chat API "
                    "(ms-swift's deploy server; the other arguments are swift deploy's).")
    ap.add_argument("--skill", choices=SKILLS, required=True)
    ap.add_argument("--codec", default=None,
                    help="masks: the mask codec, builtin:PATH or samtok:DIR (as training)")
    ap.add_argument("--image_root", default=None, type=Path,
                    help="local image paths are read only under this folder (default: none)")
    ap.add_argument("--allow_remote_images", action="store_true",
                    help="fetch http(s) image URLs (ms-swift's SSRF-checked fetcher)")
    ap.add_argument("--max_image_pixels", type=int, default=40_000_000,
                    help="largest picture decoded, width x height (default 40,000,000)")
    ap.add_argument("--max_crops", type=int, default=8, help="crop: most crops per answer")
    ours, rest = ap.parse_known_args(argv)
    if ours.skill == "masks" and not ours.codec:
        ap.error("--skill masks needs --codec builtin:PATH or samtok:DIR")
    if ours.image_root is not None and not ours.image_root.is_dir():
        ap.error(f"--image_root {ours.image_root}: no such folder")
    if "--host" not in rest:
        rest += ["--host", "127.0.0.1"]
    return ours, rest


def main(argv: list[str] | None = None) -> int:
    ours, rest = parse(sys.argv[1:] if argv is None else argv)
    settings.restrict_local_media(ours.image_root)
    register_skill(ours.skill)
    if ours.skill == "crop" and "--template" not in rest:  # the crop template of its family
        from swift.model import get_model_info_meta

        from svp.croptool.geometry import family_of

        model = rest[rest.index("--model") + 1] if "--model" in rest else None
        if model is None:
            print("error: --model is required", file=sys.stderr)
            return 2
        model_type = rest[rest.index("--model_type") + 1] if "--model_type" in rest else \
            get_model_info_meta(model)[0].model_type
        rest += ["--template", f"{family_of(model_type)}_crop"]
    cls = _deploy_class()
    cls.skill, cls.codec_spec, cls.max_crops = ours.skill, ours.codec, ours.max_crops
    fetch = None
    if ours.allow_remote_images:
        from swift.utils import SafeUrlFetcher

        timeout = settings.fetch_timeout()

        def fetch(url: str) -> bytes:
            return SafeUrlFetcher.read(url, timeout=timeout)
    cls.rules = MediaRules(ours.image_root, fetch, ours.max_image_pixels)
    cls(rest).main()
    return 0
