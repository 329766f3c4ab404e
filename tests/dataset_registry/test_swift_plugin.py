"""The dataset entry inside ms-swift (in process): registration, name%X, strictness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

swift_dataset = pytest.importorskip("swift.dataset")

from svp.dataset_registry.registry import DataValidationError, RegistryError  # noqa: E402
from svp.dataset_registry.swift_plugin import register  # noqa: E402
from tests.helpers import REPO, load_entry, offline_env  # noqa: E402


def load(specs, seed=42, shuffle=False, **kw):
    train, _ = swift_dataset.load_dataset(specs, seed=seed, shuffle=shuffle, **kw)
    return train


def test_entry_imports_twice(shapes_registry, monkeypatch):
    monkeypatch.setenv("SVP_DATASET_REGISTRY", str(shapes_registry))
    register()  # through the package first, then by path as swift does, twice
    module = load_entry("dataset_registry")
    assert load_entry("dataset_registry") is module  # cached by path: no second import
    assert module.__name__.startswith("_swift_external_")
    assert "shapes" in swift_dataset.DATASET_MAPPING


def test_no_entry_file_shadows_an_installed_module():
    """ms-swift puts plugins/ first on sys.path; an entry named like an installed module
    (the old plugins/datasets.py vs HuggingFace datasets) would replace it in every process
    that imports it afresh, e.g. a spawned dataloader worker."""
    names = sorted(p.stem for p in (REPO / "plugins").glob("*.py"))
    code = ("import importlib.util, json, sys; "
            f"print(json.dumps([n for n in {names!r} if importlib.util.find_spec(n)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=offline_env(), cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [], "entry files named like installed modules"
    assert not (REPO / "plugins" / "__init__.py").exists(), "plugins/ holds entry files only"


def test_percent_sampling_counts_and_seed(shapes_registry):
    register([str(shapes_registry)])
    ds = load(["shapes%50", "more%200"])
    assert len(ds) == 10 + 12
    sources = [r for r in ds["dataset"]]
    assert sum(s.endswith("shapes.jsonl") for s in sources) == 10
    assert sum(s.endswith("more.json") for s in sources) == 12
    # every 'more' row appears exactly twice (200% = two whole copies)
    more = [json.dumps(r["messages"]) + str(r["images"]) for r in ds if
            r["dataset"].endswith("more.json")]
    assert all(more.count(m) == 2 for m in more)
    # With --dataset_shuffle true (ms-swift's default) the rows are drawn at random, seeded.
    first = [r["images"][0]["path"] for r in load(["shapes%50"], seed=7, shuffle=True)]
    again = [r["images"][0]["path"] for r in load(["shapes%50"], seed=7, shuffle=True)]
    other = [r["images"][0]["path"] for r in load(["shapes%50"], seed=8, shuffle=True)]
    assert len(set(first)) == 10
    assert first == again, "same --data_seed must select the same rows"
    assert sorted(first) != sorted(other), "another seed should select other rows"
    # Without shuffling, %X takes the first X% in file order, as #N does.
    ordered = [Path(r["images"][0]["path"]).name for r in load(["shapes%50"])]
    assert ordered == [f"shapes_{i:04d}.png" for i in range(10)]


def test_registry_rows_arrive_as_swift_messages(shapes_registry):
    register([str(shapes_registry)])
    row = load(["more"])[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][0]["content"].startswith("<image>\n")
    assert Path(row["images"][0]["path"]).is_file()


def test_percent_on_a_plain_annotation_path(shapes_registry):
    register([str(shapes_registry)])
    path = shapes_registry.parent / "shapes.jsonl"
    assert len(load([f"{path}%25"])) == 5


def test_hash_and_percent_together_is_an_error(shapes_registry):
    register([str(shapes_registry)])
    with pytest.raises(RegistryError, match="#N .rows. and %X .percent. cannot be combined"):
        load(["shapes#3%50"])


def test_bad_rows_stop_loading_with_row_numbers(tmp_path, monkeypatch):
    rows = [{"image": "missing.png", "conversations": [
        {"from": "human", "value": "<image>q"}, {"from": "gpt", "value": "a"}]},
        {"conversations": [{"from": "gpt", "value": "a"}]}]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reg = tmp_path / "reg.yaml"
    reg.write_text("bad_ds: {annotation_path: bad.jsonl}\n")
    register([str(reg)])
    with pytest.raises(DataValidationError) as err:
        load(["bad_ds%50"])
    text = str(err.value)
    assert "bad.jsonl: line 1: missing_image" in text
    assert "bad.jsonl: line 2: turn_order" in text
    monkeypatch.setenv("SVP_BAD_ROWS", "skip")
    with pytest.raises(RegistryError, match="no usable rows"):
        load(["bad_ds"])


def test_unknown_bare_name_is_a_clear_error(shapes_registry):
    register([str(shapes_registry)])
    with pytest.raises(RegistryError, match=r"unknown dataset 'shapez'.*registry \(.*yaml"):
        load(["shapez%50"])
    register([])
    with pytest.raises(RegistryError, match="no dataset registry is loaded"):
        load(["nothing_here"])
