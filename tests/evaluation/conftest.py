"""Evaluation runs as users run it: ``python -m svp.evaluation run ...`` against a server
started with ``python -m svp.serve`` (tests/serve/conftest.py), one server per module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO, offline_env


def evaluate_cmd(server, bench: str, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "svp.evaluation", "run", "--benchmark", bench,
            "--data", str(data), "--base_url", server.url + "/v1", "--model", server.model,
            "--out", str(out), *extra]


def evaluate(server, bench: str, data: Path, out: Path, *extra: str) -> str:
    """Run it to the end; returns its output, fails with it unless it succeeded."""
    res = subprocess.run(evaluate_cmd(server, bench, data, out, *extra), cwd=REPO,
                         env=offline_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def kill_when(cmd: list[str], done, timeout: float = 300) -> int:
    """Start ``cmd`` in its own process group and SIGKILL the whole group (EvalScope's
    process too) as soon as ``done()`` says so; returns what ``done()`` saw last."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=offline_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            seen = done()
            if seen:
                return seen
            assert proc.poll() is None, "the run ended before it could be killed halfway"
            time.sleep(0.05)
        raise AssertionError("the run did not get halfway in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def jsonl_ids(paths, key: str) -> list:
    out = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            try:
                out.append(json.loads(line)[key])
            except ValueError:
                pass
    return out
