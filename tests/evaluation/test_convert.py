"""The benchmarks EvalScope lacks, converted from their released columns into its
general_vmcq layout: every row kept with its category, a broken row named, not dropped."""

from __future__ import annotations

import csv
import json

import pytest

from svp.evaluation import convert
from tests.evaluation import fixtures


def _rows(out, subset):
    return [json.loads(x) for x in (out / f"{subset}_val.jsonl").read_text().splitlines()]


def test_hr_bench_cv_bench_and_mmvp_keep_every_row_and_category(tmp_path):
    hr = fixtures.hr_bench(tmp_path / "hr" / "hr_bench_4k.tsv", n=5)
    assert convert.hr_bench(hr, tmp_path / "o_hr") == ["cross", "single"]
    assert len(_rows(tmp_path / "o_hr", "single")) == 3
    row = _rows(tmp_path / "o_hr", "cross")[0]
    assert row["question"].startswith("<image 1> ") and row["answer"] == "A"
    assert len(row["options"]) == 4 and (tmp_path / "o_hr" / "images").is_dir()

    cvb = fixtures.cv_bench(tmp_path / "cvb", n=4)
    assert convert.cv_bench(cvb, tmp_path / "o_cv") == ["count", "relation"]
    assert {r["answer"] for r in _rows(tmp_path / "o_cv", "count")} == {"A"}

    mm = fixtures.mmvp(tmp_path / "mmvp", n=4)
    assert convert.mmvp(mm, tmp_path / "o_mm") == ["mmvp"]
    rows = _rows(tmp_path / "o_mm", "mmvp")
    assert [r["answer"] for r in rows] == ["B", "A", "B", "A"]  # '(b)' / '(a)' as written
    assert all(len(r["options"]) == 2 for r in rows)


def test_a_broken_row_is_named(tmp_path):
    mm = fixtures.mmvp(tmp_path / "mmvp", n=3)
    lines = (mm / "Questions.csv").read_text().splitlines()
    lines[2] = lines[2].replace("(a)\"", "").rsplit(",", 1)[0] + ",(c)"
    (mm / "Questions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(convert.BenchmarkFileError, match=r"Questions.csv: line 3: correct "
                                                         r"answer '\(c\)' is not an option"):
        convert.mmvp(mm, tmp_path / "o")

    hr = fixtures.hr_bench(tmp_path / "hr.tsv", n=2)
    with open(hr, newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    table[2][-1] = "bm90IGEgcGljdHVyZQ=="  # base64 of text, not a picture
    with open(hr, "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows(table)
    with pytest.raises(convert.BenchmarkFileError, match=r"hr.tsv: row 3 \(index 1\): the "
                                                         "picture is not readable"):
        convert.hr_bench(hr, tmp_path / "o2")
