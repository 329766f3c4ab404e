"""Shared test helpers: where the tiny models live, and running real ms-swift commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


FIXTURES = REPO / "tests" / "fixtures"


def fixture(*parts: str) -> Path:
    """A file the project carries for its tests (``tests/fixtures``, provenance in a README
    beside each); a clone holds everything the suite reads."""
    path = FIXTURES.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"test fixture {path} is missing from the checkout")
    return path


def coco_fixture() -> Path:
    """Real COCO instance polygons of image 98304 (tests/fixtures/coco_sample/README.md)."""
    return fixture("coco_sample", "instances_sample.json")
CACHE = REPO / ".cache" / "tiny_models"
SWIFT = str(Path(sys.executable).parent / "swift")
TEMPLATE_ARGS = {
    "qwen2_5_vl": ["--model_type", "qwen2_5_vl", "--template", "qwen2_5_vl"],
    "qwen3_vl": ["--model_type", "qwen3_vl", "--template", "qwen3_vl"],
}
# Small, CPU-friendly settings shared by every swift run in the tests.
TRAIN_ARGS = ["--check_model", "false", "--per_device_train_batch_size", "2",
              "--gradient_accumulation_steps", "1", "--logging_steps", "1",
              "--dataloader_num_workers", "0", "--report_to", "tensorboard"]


def load_entry(name: str):
    """Import ``plugins/<name>.py`` exactly as ``--external_plugins`` does (by path; a second
    call is a no-op in ms-swift too). Returns the module."""
    from swift.utils.utils import import_external_file

    return import_external_file(str(REPO / "plugins" / f"{name}.py"))


def offline_env(**extra: str) -> dict[str, str]:
    """The environment every subprocess gets: CPU only, no hub, our package importable, this
    interpreter's folder first on PATH (``python``/``swift`` as the recipes call them), and
    the read guard's ``sitecustomize`` first on PYTHONPATH (tests/read_guard.py: a Python
    process a test starts reads nothing from beside the clone either)."""
    from tests.read_guard import SITE_DIR

    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(SITE_DIR), str(REPO), env.get("PYTHONPATH", "")]),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    return env


def run_swift(subcommand: str, args: list[str], log: Path, env: dict[str, str],
              cwd: Path, timeout: int = 600, expect_ok: bool = True) -> str:
    """Run ``swift <subcommand> ...``; return its output, failing with the log tail if needed."""
    t0 = time.time()
    proc = subprocess.run([SWIFT, subcommand, *args], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write_text(proc.stdout)
    if expect_ok and proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise AssertionError(f"swift {subcommand} failed (rc={proc.returncode}, "
                             f"{time.time() - t0:.0f}s), log {log}:\n{tail}")
    if not expect_ok and proc.returncode == 0:
        raise AssertionError(f"swift {subcommand} unexpectedly succeeded; log {log}")
    return proc.stdout


def crop_setup(model_dir: Path, arch: str, folder: Path):
    """(model, processor, crop template in train mode with the model attached, path of a
    640x480 random scene) for the crop-template and R-GRPO token-level tests."""
    import numpy as np
    from PIL import Image
    from swift.model import get_model_processor
    from swift.template import get_template

    model, processor = get_model_processor(str(model_dir), model_type=arch)
    template = get_template(processor, template_type=f"{arch}_crop")
    template.set_mode("train")
    template.model = model
    path = folder / "scene.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
    return model, processor, template, path


def last_checkpoint(output_dir: Path) -> Path:
    """The newest ``checkpoint-N`` (highest step) ms-swift wrote under ``output_dir``."""
    from svp.common.checkpoints import newest_checkpoint

    ckpt = newest_checkpoint(output_dir)
    assert ckpt is not None, f"no checkpoint under {output_dir}"
    return ckpt


class JudgeHandler(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible endpoint: says 1 when the gold word appears in the answer."""

    calls = 0

    def do_GET(self):  # /v1/models
        self._send({"data": [{"id": "judge-model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        prompt = body["messages"][0]["content"]
        gold = prompt.split("Ground truth: ")[1].split("\n")[0]
        pred = prompt.split("Model answer: ")[1].split("\n")[0]
        if gold == "boom":
            self.send_response(500)
            self.end_headers()
            return
        verdict = "1" if gold.split()[-1] in pred else "0"
        assert body["model"] == "judge-model" and body["temperature"] == 0.0
        self._send({"choices": [{"message": {"content": f"Verdict: {verdict}"}}]})

    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


# ----------------------------------------------------------------------------- multi-process
MODES = ("ddp", "zero2", "zero3")
# what the other capabilities' two-process tests run: ZeRO-3 partitions what ZeRO-2 does and
# the parameters too; one capability (mask-token SFT: grown vocabulary, trained token rows)
# keeps the ZeRO-2 run for DeepSpeed's stage-1/2 optimizer path
MODES_DDP_ZERO3 = ("ddp", "zero3")
WRAPPER = {"ddp": "DistributedDataParallel", "zero2": "DeepSpeedEngine",
           "zero3": "DeepSpeedEngine"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_recipe(recipe: str, log: Path, cwd: Path, mode: str | None = None, nproc: int = 2,
               timeout: int = 900, expect_ok: bool = True, **env: str) -> str:
    """``bash recipes/<recipe>`` with ``nproc`` processes (torchrun through ms-swift) in
    ``mode`` (``ddp``, ``zero2``, ``zero3``), exactly as a user runs it: the recipe itself
    adds the CPU arguments. Returns the output; fails with its tail unless it succeeded."""
    import signal

    launch = {"NPROC_PER_NODE": str(nproc), "MASTER_PORT": str(free_port())}
    if mode is not None:
        launch["DEEPSPEED"] = "" if mode == "ddp" else mode
    # its own process group: a hung job (a deadlocked collective) is killed whole at the
    # timeout, torchrun's workers included, instead of hanging the test session
    with subprocess.Popen(["bash", str(REPO / "recipes" / recipe)], cwd=cwd,
                          env=offline_env(**{**launch, **env}), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            log.write_text(output)
            raise AssertionError(f"{recipe} ({mode}, {nproc} processes) still running after "
                                 f"{timeout} s (hung?), killed; log {log}") from None
    log.write_text(output)
    if expect_ok and proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-50:])
        raise AssertionError(f"{recipe} ({mode}, {nproc} processes) failed "
                             f"(rc={proc.returncode}), log {log}:\n{tail}")
    if not expect_ok and proc.returncode == 0:
        raise AssertionError(f"{recipe} unexpectedly succeeded; log {log}")
    return output


def run_dir(output_dir: Path) -> Path:
    """The newest ``v<N>-<date>`` folder ms-swift wrote under ``output_dir``."""
    runs = sorted(output_dir.glob("v*-*"), key=lambda p: int(p.name[1:].split("-")[0]))
    assert runs, f"no run under {output_dir}"
    return runs[-1]


def assert_one_job(run: Path, mode: str, world: int = 2) -> dict[str, str]:
    """The ranks' ``svp_rank_check`` records (``--callbacks svp_rank_check``), read and
    compared here independently of the callback's own check: one record per rank, each rank
    wrapped (DDP module or DeepSpeed engine, ZeRO-3 partitioned when asked), the same world
    size everywhere, and every trainable tensor bitwise identical on all ranks. Returns the
    digests."""
    files = sorted((run / "rank_check").glob("rank*.json"))
    assert len(files) == world, f"{len(files)} rank records in {run}, expected {world}"
    records = [json.loads(f.read_text()) for f in files]
    assert sorted(r["rank"] for r in records) == list(range(world))
    for r in records:
        assert r["wrapper"] == WRAPPER[mode], (r["rank"], r["wrapper"], mode)
        assert r["world_size"] == r["launched_world_size"] == world, r
        assert r["zero3"] == (mode == "zero3"), r
        assert r["trainable"], "no trainable tensor recorded"
    first = records[0]["trainable"]
    for r in records[1:]:
        differ = sorted(n for n in first if r["trainable"].get(n) != first[n])
        assert set(r["trainable"]) == set(first) and not differ, (
            f"rank {r['rank']} differs from rank {records[0]['rank']} in {len(differ)} "
            f"tensors: {differ[:5]}")
    return first


def step_losses(run: Path) -> list[float]:
    from svp.common.run_log import step_rows

    return [float(r["loss"]) for r in step_rows(run / "logging.jsonl") if "loss" in r]


def assert_finite_and_falling(losses: list[float]) -> None:
    import math

    assert losses and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], f"the loss did not fall: {losses}"
