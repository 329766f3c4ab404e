"""Benchmarks EvalScope lacks, written in its ``general_vmcq`` layout so EvalScope runs them.

``general_vmcq`` reads ``DIR/<subset>_val.jsonl`` rows ``{"question": "<image 1> ...",
"options": [...], "image_1": PATH, "answer": "A"}``. Each converter reads the benchmark's
released files in their own columns, writes the pictures to ``DIR/images/`` and one subset
per category, and returns the subset names. A row that cannot be read (no picture, an
answer that is not one of the options) is an error naming the file and row: a benchmark with
rows silently dropped would report a score on a different benchmark.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections import defaultdict
from pathlib import Path

from svp.common.io import write_atomic

LETTERS = "ABCDEFGHIJ"


class BenchmarkFileError(ValueError):
    """A row of a benchmark file that does not hold what the benchmark defines."""


def _write_subsets(out: Path, rows: dict[str, list[dict]]) -> list[str]:
    for subset, items in rows.items():
        write_atomic(out / f"{subset}_val.jsonl", "".join(json.dumps(r) + "\n" for r in items))
    return sorted(rows)


def _subset_name(category: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", str(category).strip().lower()).strip("_")
    return name or "default"


def _save_picture(data: bytes, out: Path, name: str, where: str) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "PNG").lower()
    except Exception as exc:
        raise BenchmarkFileError(f"{where}: the picture is not readable ({exc})") from exc
    path = out / "images" / f"{name}.{'jpg' if fmt == 'jpeg' else fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path.resolve())


def _row(question: str, options: list[str], answer: str, image: str, where: str) -> dict:
    if not options:
        raise BenchmarkFileError(f"{where}: no options")
    if answer not in LETTERS[:len(options)]:
        raise BenchmarkFileError(f"{where}: answer {answer!r} is not one of the "
                                 f"{len(options)} options' letters")
    return {"question": f"<image 1> {question}", "options": options, "image_1": image,
            "answer": answer}


def hr_bench(src: str | Path, out: str | Path) -> list[str]:
    """HR-Bench's TSV (VLMEvalKit's MCQ columns: index, image as base64, question, A-D,
    answer, category) -> one subset per category."""
    import pandas as pd

    src, out = Path(src), Path(out)
    csv.field_size_limit(1 << 31)  # 8K pictures as base64 are long fields
    table = pd.read_csv(src, sep="\t", dtype=str, keep_default_na=False, engine="python")
    need = {"index", "image", "question", "answer", "category", "A", "B"}
    if missing := need - set(table.columns):
        raise BenchmarkFileError(f"{src}: columns {sorted(missing)} missing (HR-Bench's TSV "
                                 f"has {sorted(need)})")
    rows: dict[str, list[dict]] = defaultdict(list)
    for i, r in table.iterrows():
        where = f"{src}: row {i + 2} (index {r['index']})"
        options = [r[c] for c in LETTERS if c in table.columns and r[c] != ""]
        try:
            data = base64.b64decode(r["image"], validate=True)
        except ValueError as exc:
            raise BenchmarkFileError(f"{where}: image is not base64 ({exc})") from exc
        image = _save_picture(data, out, f"{src.stem}_{r['index']}", where)
        rows[_subset_name(r["category"])].append(
            _row(r["question"], options, r["answer"].strip(), image, where))
    return _write_subsets(out, rows)


def cv_bench(src: str | Path, out: str | Path) -> list[str]:
    """CV-Bench's parquet files (idx, type, task, image, question, choices, answer '(A)';
    ``src`` a file or a folder of them) -> one subset per task."""
    import pandas as pd

    src, out = Path(src), Path(out)
    files = sorted(src.rglob("*.parquet")) if src.is_dir() else [src]
    if not files:
        raise BenchmarkFileError(f"{src}: no parquet file")
    rows: dict[str, list[dict]] = defaultdict(list)
    for f in files:
        table = pd.read_parquet(f)
        need = {"idx", "task", "image", "question", "choices", "answer"}
        if missing := need - set(table.columns):
            raise BenchmarkFileError(f"{f}: columns {sorted(missing)} missing")
        for i, r in table.iterrows():
            where = f"{f}: row {i} (idx {r['idx']})"
            image = r["image"]
            data = image.get("bytes") if isinstance(image, dict) else None
            if not data:
                raise BenchmarkFileError(f"{where}: no picture bytes")
            saved = _save_picture(data, out, f"cvbench_{r['task']}_{r['idx']}", where)
            answer = str(r["answer"]).strip().strip("()")
            rows[_subset_name(r["task"])].append(
                _row(r["question"], [str(c) for c in r["choices"]], answer, saved, where))
    return _write_subsets(out, rows)


_MMVP_OPTION = re.compile(r"\(([a-z])\)\s*(.*?)\s*(?=\([a-z]\)|$)")


def mmvp(src: str | Path, out: str | Path) -> list[str]:
    """MMVP's ``Questions.csv`` (Index, Question, Options '(a) x (b) y', Correct Answer
    '(a)') with ``MMVP Images/<Index>.jpg`` beside it -> one subset ``mmvp``."""
    src, out = Path(src), Path(out)
    csv_path = src / "Questions.csv" if src.is_dir() else src
    images = csv_path.parent / "MMVP Images"
    rows: list[dict] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for line_no, r in enumerate(csv.DictReader(f), start=2):
            where = f"{csv_path}: line {line_no}"
            try:
                index, question = r["Index"], r["Question"]
                options_text, correct = r["Options"], r["Correct Answer"]
            except KeyError as exc:
                raise BenchmarkFileError(f"{where}: column {exc} missing") from exc
            parsed = _MMVP_OPTION.findall(options_text)
            if len(parsed) < 2:
                raise BenchmarkFileError(f"{where}: options {options_text!r} are not "
                                         "'(a) .. (b) ..'")
            letters = [p[0] for p in parsed]
            key = correct.strip().strip("()").lower()
            if key not in letters:
                raise BenchmarkFileError(f"{where}: correct answer {correct!r} is not an "
                                         "option")
            picture = images / f"{index}.jpg"
            if not picture.is_file():
                raise BenchmarkFileError(f"{where}: picture {picture} not found")
            rows.append(_row(question, [p[1] for p in parsed],
                             LETTERS[letters.index(key)], str(picture.resolve()), where))
    return _write_subsets(out, {"mmvp": rows})


CONVERTERS = {"hr_bench": hr_bench, "cv_bench": cv_bench, "mmvp": mmvp}
