"""Inference that runs the crop tool: generate until ``</tool_call>``, crop, append, continue.

The loop is engine-agnostic over ms-swift's inference engines (``TransformersEngine`` here;
``VllmEngine`` where vLLM is installed): each round sends the conversation so far, with the
assistant's partial answer as the last message (ms-swift continues it instead of starting a
new turn) and every crop listed as an image after its call, and stops at ``</tool_call>``.
Crops are cut by :meth:`CropPolicy.execute`, the code the training template runs, from the
original image; the crop template sizes the main image the same way as in training.

A request whose box is unreadable or degenerate is recorded in ``invalid_calls`` with the
reason and generation continues without a crop (the model sees its own text only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from svp.croptool import settings
from svp.croptool.format import STOP, ends_with_open_call, extract_answer, extract_think
from svp.croptool.geometry import CropPolicy, family_of, parse_tool_calls


@dataclass
class CropResult:
    """One finished generation."""

    text: str                                   # the assistant text, calls included
    think: str | None
    answer: str | None
    tool_calls: list[dict] = field(default_factory=list)   # {"box_model", "box_pixels"}
    invalid_calls: list[dict] = field(default_factory=list)  # {"text", "reason"}
    crops: list[Image.Image] = field(default_factory=list, repr=False)
    rounds: int = 0
    finished: bool = True                       # False: stopped by max_new_tokens

    def to_json(self, crop_paths: list[str] | None = None) -> dict:
        d = asdict(self)
        d.pop("crops")
        d["crops"] = crop_paths or []
        return d


class CropToolInference:
    """Python API: ``CropToolInference(model_path).generate(image, question)``."""

    def __init__(self, model_path: str | None = None, *, model_type: str | None = None,
                 adapters: list[str] | None = None, engine=None, family: str | None = None,
                 max_crops: int = 8, max_new_tokens: int = 512, temperature: float = 0.0,
                 backend: str = "transformers", max_batch_size: int = 8, seed: int | None = 0,
                 system: str | None = None):
        from svp.croptool.swift_template import register

        register()  # the crop templates (idempotent)

        if engine is None:
            if model_path is None:
                raise ValueError("give model_path or an engine")
            engine = self._make_engine(model_path, model_type, adapters, family, backend,
                                       max_batch_size, max_crops)
        self.engine = engine
        self.family = family or family_of(engine.template.template_meta.template_type)
        self.policy: CropPolicy = settings.load().policy(self.family)
        self.max_crops, self.max_new_tokens = max_crops, max_new_tokens
        self.temperature, self.seed, self.system = temperature, seed, system

    @staticmethod
    def _make_engine(model_path, model_type, adapters, family, backend, max_batch_size,
                     max_crops):
        from swift.model import get_model_info_meta

        if model_type is None:
            model_type = get_model_info_meta(model_path)[0].model_type
        template_type = f"{family or family_of(model_type)}_crop"
        if backend == "vllm":
            from swift.infer_engine import VllmEngine

            # the main image plus every crop must fit in one prompt
            return VllmEngine(model_path, model_type=model_type, template_type=template_type,
                              adapters=adapters or None, max_num_seqs=max_batch_size,
                              limit_mm_per_prompt={"image": max_crops + 1})
        from swift.infer_engine import TransformersEngine

        return TransformersEngine(model_path, model_type=model_type, adapters=adapters or None,
                                  template_type=template_type, max_batch_size=max_batch_size)

    # ------------------------------------------------------------------------------------
    def generate(self, image, question: str, assistant_prefix: str = "") -> CropResult:
        return self.batch_generate([image], [question], [assistant_prefix])[0]

    def batch_generate(self, images, questions, assistant_prefixes=None) -> list[CropResult]:
        prefixes = assistant_prefixes or [""] * len(images)
        states = []
        for image, question, prefix in zip(images, questions, prefixes, strict=True):
            if not isinstance(image, Image.Image):
                image = Image.open(image)
            image = image.convert("RGB")
            messages = [] if self.system is None else [{"role": "system",
                                                        "content": self.system}]
            messages.append({"role": "user", "content": "<image>" + question})
            states.append(self.new_state(image, messages, [image], prefix))
        while True:
            active = [s for s in states if not s["done"]]
            if not active:
                break
            rounds = [self._round(s) for s in active]
            # one engine call per distinct budget (RequestConfig is per call)
            by_budget: dict[int, list[int]] = {}
            for i, (_, config) in enumerate(rounds):
                by_budget.setdefault(config.max_tokens, []).append(i)
            for idx in by_budget.values():
                outs = self.engine.infer([rounds[i][0] for i in idx], rounds[idx[0]][1],
                                         use_tqdm=False)
                for i, out in zip(idx, outs, strict=True):
                    self._absorb(active[i], out)
        return [self._finish(s) for s in states]

    async def agenerate(self, messages: list[dict], images: list, prefix: str = "",
                        config=None, **infer_kwargs) -> CropResult:
        """One conversation, for a server: ``messages`` in ms-swift's flat form (string
        contents with ``<image>`` tags), ``images`` their pictures; crops are cut from the
        first. Each round is one ``engine.infer_async`` call, so concurrent conversations
        share the engine's batches. ``config``: the client's sampling settings (its
        ``max_tokens`` is the budget of the whole answer, crops' rounds included)."""
        state = self.new_state(images[0], messages, images, prefix, config)
        while not state["done"]:
            request, round_config = self._round(state)
            self._absorb(state, await self.engine.infer_async(request, round_config,
                                                              **infer_kwargs))
        return self._finish(state)

    def new_state(self, image, messages: list[dict], images: list, prefix: str = "",
                  config=None) -> dict:
        """A conversation about to be answered: the original picture (crops are cut from
        it), the messages before the answer and their pictures."""
        budget = self.max_new_tokens if config is None or config.max_tokens is None \
            else config.max_tokens
        state = {"image": image.convert("RGB"), "messages": messages, "images": list(images),
                 "text": "", "result": CropResult("", None, None), "budget": budget,
                 "done": False, "config": config}
        if prefix:
            self._extend(state, prefix)
        return state

    def _round(self, s: dict):
        """The request and sampling settings of the next round of ``s``."""
        from dataclasses import replace

        from swift.infer_engine import InferRequest, RequestConfig

        messages = list(s["messages"])
        if s["text"]:  # ms-swift continues a final assistant message instead of a new turn
            messages.append({"role": "assistant", "content": s["text"]})
        request = InferRequest(messages=messages, images=[*s["images"], *s["result"].crops])
        if s["config"] is None:
            config = RequestConfig(max_tokens=s["budget"], temperature=self.temperature,
                                   stop=[STOP], seed=self.seed)
        else:
            stops = [STOP, *[t for t in (s["config"].stop or []) if t != STOP]]
            config = replace(s["config"], max_tokens=s["budget"], stop=stops, stream=False, n=1)
        return request, config

    def _absorb(self, s: dict, out) -> None:
        """One round's output into the conversation: its text, a crop if it ends with a call,
        and whether the answer is finished."""
        choice = out.choices[0]
        piece = choice.message.content or ""
        s["result"].rounds += 1
        s["budget"] -= out.usage.completion_tokens
        stopped_at_call = choice.finish_reason == "stop" and (
            piece.rstrip().endswith(STOP) or ends_with_open_call(s["text"] + piece))
        if stopped_at_call and not piece.rstrip().endswith(STOP):
            piece += STOP  # engines that strip the stop string
        self._extend(s, piece)
        if not stopped_at_call:  # end of answer, or out of tokens
            s["done"] = True
            s["result"].finished = choice.finish_reason == "stop"
        elif s["budget"] <= 0:
            s["done"], s["result"].finished = True, False
        elif not s["text"].endswith("<image>") and len(s["result"].crops) >= self.max_crops:
            s["done"] = True  # a call past max_crops ends the loop

    @staticmethod
    def _finish(s: dict) -> CropResult:
        r = s["result"]
        r.text = s["text"]
        r.think, r.answer = extract_think(r.text), extract_answer(r.text, closed=False)
        return r

    def _extend(self, state: dict, piece: str) -> None:
        """Append generated (or prefilled) text; execute a call it ends with."""
        state["text"] += piece
        if not state["text"].rstrip().endswith(STOP):
            return
        calls = parse_tool_calls(state["text"])
        if not calls:
            return
        call, result = calls[-1], state["result"]
        if len(result.crops) >= self.max_crops:
            result.invalid_calls.append({"text": state["text"][call.start:call.end],
                                         "reason": f"max_crops={self.max_crops} reached"})
            return
        crop, px, reason = (self.policy.execute(state["image"], call.box) if call.box
                            else (None, None, call.error))
        if crop is None:
            result.invalid_calls.append({"text": state["text"][call.start:call.end],
                                         "reason": reason})
            return
        result.tool_calls.append({"box_model": list(call.box),
                                  "box_pixels": [round(v, 2) for v in px]})
        result.crops.append(crop)
        state["text"] += "<image>"


def save_results(results: list[CropResult], output_json: str | Path) -> Path:
    """Write the results (and their crops as PNG beside the JSON), atomically."""
    import json

    from svp.common.io import write_atomic

    out = Path(output_json)
    crops_dir = out.with_suffix("")
    payload = []
    for i, r in enumerate(results):
        paths = []
        for k, crop in enumerate(r.crops):
            crops_dir.mkdir(parents=True, exist_ok=True)
            p = crops_dir / f"sample{i}_crop{k}.png"
            crop.save(p)
            paths.append(str(p))
        payload.append(r.to_json(paths))
    write_atomic(out, json.dumps(payload if len(payload) > 1 else payload[0], indent=2,
                                 ensure_ascii=False) + "\n")
    return out
