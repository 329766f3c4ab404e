"""An LLM judge for free-form answers through any OpenAI-compatible endpoint.

VLM-R3 and DeepEyes both fall back to a large LLM (Qwen2.5-72B-Instruct) when rules cannot
decide whether a free-form answer matches the ground truth. Here the endpoint is whatever
serves ``/v1/chat/completions``: ``swift deploy --model Qwen/Qwen2.5-72B-Instruct``, vLLM,
or a hosted API. Configured by the ``SVP_JUDGE_*`` settings (:mod:`svp.croptool.settings`),
so ``swift rlhf`` needs no new flags.

A failed request (network, HTTP error, unreadable reply) counts as "not judged": the answer
scores 0, the failure is counted and logged, and training goes on. Verdicts are cached per
(question, gold, prediction) for the life of the process, so the tool reward and the
accuracy reward never pay for the same judgement twice.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger("swift.svp.judge")

PROMPT = (
    "You grade answers to visual questions. Decide whether the model's answer means the same "
    "as the ground truth (ignore wording, case and extra explanation; a different value, "
    "object or option is wrong).\n\nQuestion: {question}\nGround truth: {gold}\n"
    "Model answer: {pred}\n\nReply with a single digit: 1 if correct, 0 if not."
)
_DIGIT = re.compile(r"\b([01])\b")


class Judge:
    """Callable ``judge(question, gold, pred) -> bool | None`` (None: no verdict)."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, workers: int = 8, max_cache: int = 100_000):
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.workers = max(1, workers)
        self.max_cache = max_cache
        self.cache: dict[tuple[str, str, str], bool | None] = {}
        self.failures = 0
        self.requests = 0

    # ------------------------------------------------------------------ http
    def _post(self, path: str, payload: dict | None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers,
                                     method="GET" if payload is None else "POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode())

    def _model_name(self) -> str:
        if self.model is None:
            listed = self._post("/models", None).get("data") or []
            if not listed:
                raise RuntimeError(f"{self.url}/models lists no model; set SVP_JUDGE_MODEL")
            self.model = str(listed[0]["id"])
        return self.model

    def _ask(self, question: str, gold: str, pred: str) -> bool | None:
        self.requests += 1
        try:
            reply = self._post("/chat/completions", {
                "model": self._model_name(),
                "messages": [{"role": "user", "content": PROMPT.format(
                    question=question.strip() or "(not given)", gold=gold, pred=pred)}],
                "temperature": 0.0, "max_tokens": 8})
            text = reply["choices"][0]["message"]["content"] or ""
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError,
                RuntimeError) as exc:
            self.failures += 1
            logger.warning(f"LLM judge at {self.url} failed ({self.failures} of "
                           f"{self.requests} requests so far): {exc}")
            return None
        m = _DIGIT.search(text)
        if m is None:
            self.failures += 1
            logger.warning(f"LLM judge reply has no 0/1 verdict: {text[:80]!r}")
            return None
        return m.group(1) == "1"

    # ------------------------------------------------------------------ api
    def prefetch(self, triples) -> None:
        """Judge many (question, gold, pred) at once, ``workers`` requests in flight."""
        todo = list(dict.fromkeys(t for t in triples if t not in self.cache))
        if not todo:
            return
        with ThreadPoolExecutor(self.workers) as pool:
            for key, verdict in zip(todo, pool.map(lambda t: self._ask(*t), todo), strict=True):
                self._store(key, verdict)

    def _store(self, key, verdict) -> None:
        if len(self.cache) >= self.max_cache:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = verdict

    def __call__(self, question: str, gold: str, pred: str) -> bool | None:
        key = (question, gold, pred)
        if key not in self.cache:
            self._store(key, self._ask(*key))
        return self.cache[key]
