"""Referring segmentation against a served mask-token model: ask, decode, score, resume.

Each sentence is asked as SAMTok's evaluation asks it (the picture, then ``Please segment
{phrase} in this image.``, greedy) of a server started with ``python -m svp.serve --skill
masks``; the server decodes the answer's mask tokens with its codec and returns the masks as
COCO RLE in ``choices[0].svp``. Their union is the prediction, scored against the union of the
targets at the picture's original size (:mod:`svp.masktok.gres_metrics`): cIoU (sum I / sum
U), gIoU (mean per-sample IoU), Pr@0.5/0.7/0.9 over targeted samples, and N-acc / T-acc where
the split has no-target expressions (gRefCOCO).

``protocol`` says what counts as answering "no target": ``samtok`` (default, SAMTok's
``metric()``): the decoded union is empty; ``tokens``: the answer holds no mask item. The
per-sample rows keep the answer text, so ``data_tools/eval_gres.py --pred`` can rescore a
gRefCOCO split under its other protocols.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from svp.evaluation.predictions import PredictionStore
from svp.evaluation.refer import load_split, sample_id
from svp.masktok.coco import mask_to_rle, rle_to_mask
from svp.masktok.gres_data import EVAL_PROMPT, GresSample, target_masks
from svp.masktok.gres_metrics import SampleScore, gres_metrics, score_sample

PROTOCOLS = ("samtok", "tokens")
THRESHOLDS = (0.5, 0.7, 0.9)


class ServerAnswerError(RuntimeError):
    """The server answered without the mask field: it is not a mask-skill server."""


@dataclass
class RefsegConfig:
    base_url: str
    model: str
    data_root: Path
    image_root: Path
    out_dir: Path
    api_key: str = "EMPTY"
    protocol: str = "samtok"
    concurrency: int = 8
    max_tokens: int = 256
    limit: int | None = None
    timeout: float = 600.0


def image_data_url(path: Path) -> str:
    """The picture's own bytes as a data URL (no re-encoding: the server sees the file)."""
    mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def request_messages(sample: GresSample, image_url: str) -> list[dict]:
    """SAMTok's evaluation question for one sentence, the picture first."""
    text = EVAL_PROMPT.format(phrase=sample.sentence.strip().lower())
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]


def predicted_union(field: dict | None, height: int, width: int) -> tuple[np.ndarray, bool]:
    """(union of the returned masks [H, W] bool, the answer named no target)."""
    if not isinstance(field, dict) or field.get("skill") != "masks":
        raise ServerAnswerError(
            "the server's answer has no mask field (choices[0].svp with skill 'masks'): start "
            "it with `python -m svp.serve --skill masks --codec ...`")
    union = np.zeros((height, width), bool)
    for m in field.get("masks") or []:
        mask = rle_to_mask(m["rle"]).astype(bool)
        if mask.shape != union.shape:
            raise ServerAnswerError(f"a returned mask is {mask.shape}, the picture "
                                    f"{union.shape}")
        union |= mask
    return union, bool(field.get("no_target", not field.get("masks")))


def score_row(sid: str, sample: GresSample, text: str, field: dict, protocol: str) -> dict:
    """One prediction row: what the model wrote, the union as RLE, and its score."""
    union, said_none = predicted_union(field, sample.height, sample.width)
    target = target_masks(sample).any(axis=0)
    pred_none = not union.any() if protocol == "samtok" else said_none
    s = score_sample(sid, union, target, pred_no_target=pred_none, no_target=sample.no_target)
    return {"id": sid, "file_name": sample.file_name, "sentence": sample.sentence,
            "response": text, "n_masks": len(field.get("masks") or []),
            "answer_no_target": said_none, "pred_rle": mask_to_rle(union), **s.to_dict()}


def split_metrics(rows: list[dict]) -> dict:
    """The split's metrics from its rows (percent)."""
    scores = [SampleScore(r["id"], r["no_target"], r["pred_no_target"], r["intersection"],
                          r["union"], r["iou"]) for r in rows]
    return gres_metrics(scores, thresholds=THRESHOLDS)


def run_split(cfg: RefsegConfig, dataset: str, split: str, client=None,
              log=print) -> dict:
    """Ask every not-yet-answered sentence of one split and score the split.

    Returns the metrics plus ``resumed`` (rows found from an earlier run), ``asked`` (asked
    now), ``failed`` (requests that failed; they are asked again next run) and the skips of
    the annotation files."""
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(f"protocol {cfg.protocol!r}: use one of {PROTOCOLS}")
    if client is None:
        from openai import OpenAI

        client = OpenAI(base_url=cfg.base_url, api_key=cfg.api_key, timeout=cfg.timeout,
                        max_retries=2)
    problems: list[str] = []
    samples, skipped = load_split(cfg.data_root, dataset, split, problems)
    for line in problems:
        log(line)
    if cfg.limit is not None:
        samples = samples[:cfg.limit]
    store = PredictionStore(cfg.out_dir / f"{dataset}_{split}.jsonl")
    ids = [sample_id(dataset, split, s) for s in samples]
    todo = [(i, s) for i, s in zip(ids, samples, strict=True) if i not in store]
    resumed = len(samples) - len(todo)
    if resumed or store.cut_lines:
        log(f"[refseg] {dataset} {split}: {resumed} of {len(samples)} sentences already "
            f"answered in {store.path}; asking {len(todo)}"
            + (f" ({store.cut_lines} half-written line(s) from a kill dropped)"
               if store.cut_lines else ""))

    def ask(item):
        sid, sample = item
        picture = cfg.image_root / sample.file_name
        if not picture.is_file():
            raise FileNotFoundError(f"{picture} (image of {sid}) not found under "
                                    f"--image_root {cfg.image_root}")
        res = client.chat.completions.create(
            model=cfg.model, messages=request_messages(sample, image_data_url(picture)),
            temperature=0, max_tokens=cfg.max_tokens)
        choice = res.choices[0].model_dump()
        return score_row(sid, sample, choice["message"]["content"] or "", choice.get("svp"),
                         cfg.protocol)

    failures: dict[str, str] = {}
    with cf.ThreadPoolExecutor(max(1, cfg.concurrency)) as pool:
        futures = {pool.submit(ask, item): item[0] for item in todo}
        for fut in tqdm(cf.as_completed(futures), total=len(futures),
                        desc=f"{dataset} {split}", disable=not todo):
            try:
                store.add(fut.result())
            except ServerAnswerError:
                pool.shutdown(cancel_futures=True)
                raise
            except Exception as exc:  # noqa: BLE001 - counted, reported, asked again next run
                failures[futures[fut]] = f"{type(exc).__name__}: {exc}"
    rows = [store.rows[i] for i in ids if i in store]
    out = {"dataset": dataset, "split": split, **split_metrics(rows),
           "expected": len(samples), "resumed": resumed, "asked": len(todo) - len(failures),
           "failed": len(failures), "skipped": skipped, "protocol": cfg.protocol,
           "predictions": str(store.path)}
    if failures:
        first = next(iter(failures.items()))
        log(f"[refseg] {dataset} {split}: {len(failures)} request(s) failed (asked again on "
            f"the next run); first: {first[0]}: {first[1]}")
    return out
