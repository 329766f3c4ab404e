"""One started server per test module: ``python -m svp.serve`` as a user starts it, on
127.0.0.1, called over HTTP with the ``openai`` package."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, offline_env


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, model: str):
        self.url, self.proc, self.log, self.model = url, proc, log, model

    def client(self, api_key: str = "none", **kw):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kw)

    def async_client(self, api_key: str = "none"):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0,
                           timeout=600)

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def start_server(args: list[str], log: Path, model: str = "tiny", timeout: float = 240,
                 **env: str) -> Server:
    """Start the server and wait until /v1/models answers (or fail with its log)."""
    port = free_port()
    cmd = [sys.executable, "-m", "svp.serve", *args, "--port", str(port),
           "--served_model_name", model, "--log_interval", "0"]
    out = log.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=offline_env(**env), stdout=out,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return Server(url, proc, log, model)
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"server not up after {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
