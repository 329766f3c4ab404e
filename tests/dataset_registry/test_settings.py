"""The registry's settings: which files, strict or skipping, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from svp.common.settings import SettingsError
from svp.dataset_registry.settings import load


def test_registry_files_from_the_variable_or_the_working_directory(tmp_path: Path):
    assert load({}).registry_files(cwd=tmp_path) == []
    (tmp_path / "datasets.yaml").write_text("x: {annotation_path: a}\n")
    assert load({}).registry_files(cwd=tmp_path) == [tmp_path / "datasets.yaml"]
    both = load({"SVP_DATASET_REGISTRY": f"{tmp_path}/a.yaml:{tmp_path}/b.yaml"})
    assert both.registry_files() == [tmp_path / "a.yaml", tmp_path / "b.yaml"]


def test_bad_rows_mode():
    assert load({}).skip_bad_rows is False
    assert load({"SVP_BAD_ROWS": "skip"}).skip_bad_rows is True
    assert load({"SVP_BAD_ROWS": "SKIP"}).skip_bad_rows is True
    with pytest.raises(SettingsError, match=r"SVP_BAD_ROWS='ignore': expected one of error, skip"):
        load({"SVP_BAD_ROWS": "ignore"})
