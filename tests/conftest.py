"""Fixtures: one tiny-model builder (cached per builder version) and a small registry dataset."""

from __future__ import annotations

import os

import pytest

from plugins.core.synthetic import write_llava_dataset, write_registry
from plugins.core.tiny_model import cached_tiny_model
from tests.helpers import CACHE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(arch)`` -> path of the cached tiny model directory for that arch."""
    return lambda arch: cached_tiny_model(arch, CACHE)


@pytest.fixture(scope="session")
def shapes_registry(tmp_path_factory):
    """A registry with 'shapes' (20 rows, JSONL, data_path) and 'more' (6 rows, JSON list)."""
    root = tmp_path_factory.mktemp("registry")
    shapes = write_llava_dataset(root, n=20, seed=1, name="shapes")
    more = write_llava_dataset(root, n=6, seed=2, name="more", jsonl=False)
    return write_registry(root / "datasets.yaml", {
        "shapes": (shapes, root / "images"),
        "more": (more.name, "images"),  # relative to the registry file's folder
    })
