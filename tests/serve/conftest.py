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
    wait_until_up(proc, url + "/v1/models", log, timeout, "server")
    return Server(url, proc, log, model)


def wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout: float,
                  what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the process's log if it exits or
    does not come up in ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{what} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()


# ----------------------------------------------------------------------------- the page
CHROMIUM = "chromium"  # Debian's package; .ci/run installs it


def start_page(base_url: str, log: Path, api_key: str = "", timeout: float = 120):
    """``python -m svp.serve.page`` against ``base_url``, as a user starts it."""
    port = free_port()
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "svp.serve.page", "--base_url", base_url,
                             "--api_key", api_key, "--port", str(port)], cwd=REPO,
                            env=offline_env(GRADIO_ANALYTICS_ENABLED="False"), stdout=out,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(proc, url, log, timeout, "page")
    return proc, url


def start_swift_app(base_url: str, model_link: Path, log: Path, *extra: str,
                    timeout: float = 120):
    """``python -m svp.serve.swift_app`` (ms-swift's ``swift app`` on gradio 6) against
    ``base_url``; its ``--model`` names the served model by its folder's name, as ms-swift
    does."""
    port = free_port()
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "svp.serve.swift_app", "--base_url",
                             base_url, "--model", str(model_link), "--server_port", str(port),
                             *extra], cwd=REPO,
                            env=offline_env(GRADIO_ANALYTICS_ENABLED="False"), stdout=out,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(proc, url, log, timeout, "swift app")
    return proc, url


def browser_page(playwright):
    """A page of Debian's chromium driven by playwright; a missing browser is a failure
    that says what to install, never a skip."""
    import shutil

    exe = shutil.which(CHROMIUM)
    if exe is None:
        pytest.fail("the page tests drive a real browser: install Debian's chromium "
                    "(apt-get install chromium; .ci/run does) and playwright "
                    "(pip install -e '.[dev]')", pytrace=False)
    browser = playwright.chromium.launch(executable_path=exe, args=["--no-sandbox"])
    return browser, browser.new_page(viewport={"width": 1400, "height": 1000})


def ask_on_page(page, url: str, picture: Path, question: str, prefix: str,
                max_tokens: int, maps: bool = False) -> str:
    """Upload, ask, wait for the answer; returns the answer box's text."""
    page.goto(url)
    page.wait_for_selector("#picture input[type=file]", state="attached")
    page.locator("#picture input[type=file]").set_input_files(str(picture))
    page.locator("#question textarea").fill(question)
    page.locator("#prefix textarea").fill(prefix)
    page.locator("#max_tokens input[type=number]").fill(str(max_tokens))
    page.locator("#max_tokens input[type=number]").press("Enter")
    if maps:
        page.locator("#maps input[type=checkbox]").check()
    page.locator("#ask").click()
    page.wait_for_function("() => { const t = document.querySelector('#answer textarea');"
                           " return t && t.value.length > 0; }", timeout=300_000)
    page.wait_for_timeout(1500)  # the picture and the gallery render after the text
    return page.locator("#answer textarea").input_value()


def keep_screenshot(shot: Path, name: str) -> None:
    """Copy a screenshot into docs/ when SVP_DOCS_SCREENSHOTS=1 (how docs/serve_*.png are
    made: ``SVP_DOCS_SCREENSHOTS=1 pytest tests/serve -k page``)."""
    import os
    import shutil

    if os.environ.get("SVP_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(shot, REPO / "docs" / name)
