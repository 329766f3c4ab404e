"""Fixtures: one tiny-model builder (cached per builder version) and a small registry dataset."""

from __future__ import annotations

import os
import tempfile
import threading
from http.server import HTTPServer
from pathlib import Path

import pytest

from svp.testing.synthetic import write_llava_dataset, write_registry
from svp.testing.tiny_model import cached_tiny_model
from tests import read_guard
from tests.helpers import CACHE, REPO, JudgeHandler

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

# Every read in this process and in the Python processes the tests start is judged against
# the clone (tests/read_guard.py); subprocesses find the log through the environment.
READ_LOG = Path(tempfile.mkdtemp(prefix="svp_read_guard_")) / "reads.log"
READ_LOG.touch()
os.environ.update(read_guard.subprocess_env(str(READ_LOG), str(REPO)))
read_guard.install(str(READ_LOG), str(REPO))


@pytest.fixture(autouse=True)
def _reads_stay_in_the_clone():
    """Fail the test during which anything beside the clone was read (the path is named):
    a clone is all a user has, so such a test is red for everyone else."""
    start = READ_LOG.stat().st_size
    yield
    with READ_LOG.open() as f:
        f.seek(start)
        seen = f.read().splitlines()
    if seen:
        paths = sorted({line.split(" ", 2)[2] for line in seen})
        pytest.fail(f"read {len(paths)} path(s) outside the repository {REPO} (a clone has "
                    f"no neighbours; carry the file under tests/fixtures): {paths[:10]}",
                    pytrace=False)


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


@pytest.fixture(scope="session")
def trained_codec(tmp_path_factory):
    """A builtin codec overfitted briefly on four synthetic scenes: (path, scenes).

    Good enough for the tools' plumbing (and IoU well above chance on those scenes); the
    real quality figure comes from bench/bench_mask_codec.py.
    """
    import itertools

    from svp.masktok.codec.builtin import CodecConfig
    from svp.masktok.codec.train import CodecTrainer, TrainConfig, synthetic_scenes

    scenes = list(itertools.islice(synthetic_scenes(3), 4))
    out = tmp_path_factory.mktemp("codec")
    trainer = CodecTrainer(out, CodecConfig(codebook_size=32),
                           TrainConfig(steps=200, images_per_batch=4, masks_per_image=4,
                                       warmup=10, save_every=10_000),
                           itertools.cycle(scenes))
    return trainer.run(), scenes


@pytest.fixture()
def judge_url():
    """A live OpenAI-compatible judge endpoint (tests.helpers.JudgeHandler) on localhost."""
    server = HTTPServer(("127.0.0.1", 0), JudgeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.fixture(scope="session")
def tiny_neo():
    """``tiny_neo(extra_layers=2)`` -> a NEO-init checkpoint built from the tiny Qwen3."""
    from svp.testing.tiny_model import cached_neo_model

    return lambda extra_layers=2: cached_neo_model(CACHE, extra_layers)
