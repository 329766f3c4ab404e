#!/usr/bin/env python
"""What the skill server adds over ms-swift's own: ``python -m svp.serve --skill crop``
against ``swift deploy`` on the same model, the same requests (no crop called), one run.

    python bench/bench_serve.py --requests 20 --clients 1 8 32

Both servers are started as users start them, on 127.0.0.1, with the same engine settings;
the picture is sent already at the crop policy's main-image size, so both templates give
the model the same tokens and the difference is the skill layer (decoding the picture, the
crop loop's round, building the answer and its ``svp`` field). Latency: median of
``--requests`` sequential requests per server, the servers alternating request by request.
Throughput: requests/s with N concurrent clients (each sends ``--requests`` requests), the
servers one after the other. Uses the tiny offline Qwen2.5-VL (greedy, 16 new tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([*cmd, "--port", str(port), "--host", "127.0.0.1",
                             "--served_model_name", "m", "--log_interval", "0"],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} not up:\n{log.read_text()[-2000:]}")


def picture_url() -> str:
    import numpy as np
    from PIL import Image

    from svp.croptool.geometry import CropPolicy

    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    main = CropPolicy("qwen2_5_vl").main_image(scene)  # what the crop template would give
    buf = io.BytesIO()
    main.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def body(url: str, i: int) -> dict:
    return {"model": "m", "temperature": 0, "max_tokens": 16, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": f"What is in picture {i}?"}]}]}


async def timed(client, payload: dict) -> float:
    start = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=payload)
    r.raise_for_status()
    return time.perf_counter() - start


async def latency(urls: dict[str, str], picture: str, n: int) -> dict[str, float]:
    import httpx

    times: dict[str, list[float]] = {k: [] for k in urls}
    clients = {k: httpx.AsyncClient(base_url=u, timeout=600) for k, u in urls.items()}
    for c in clients.values():  # warm-up
        await timed(c, body(picture, 0))
    for i in range(n):
        for k, c in clients.items():
            times[k].append(await timed(c, body(picture, i)))
    for c in clients.values():
        await c.aclose()
    return {k: statistics.median(v) for k, v in times.items()}


async def throughput(url: str, picture: str, clients: int, per_client: int) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=clients)) as c:
        await timed(c, body(picture, 0))

        async def one(k: int):
            for i in range(per_client):
                await timed(c, body(picture, k * 1000 + i))

        start = time.perf_counter()
        await asyncio.gather(*[one(k) for k in range(clients)])
        return clients * per_client / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--per_client", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from svp.testing.tiny_model import cached_tiny_model

    model = str(cached_tiny_model("qwen2_5_vl", REPO / ".cache" / "tiny_models"))
    common = ["--model", model, "--model_type", "qwen2_5_vl", "--max_batch_size", "32"]
    swift = str(Path(sys.executable).parent / "swift")
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    servers = {"stock": start([swift, "deploy", *common, "--template", "qwen2_5_vl"],
                              logs / "bench_serve_stock.log"),
               "ours": start([sys.executable, "-m", "svp.serve", "--skill", "crop", *common],
                             logs / "bench_serve_ours.log")}
    try:
        picture = picture_url()
        urls = {k: u for k, (_, u) in servers.items()}
        lat = asyncio.run(latency(urls, picture, args.requests))
        figures = {"latency_ours": lat["ours"], "latency_stock": lat["stock"],
                   "latency_ratio": lat["ours"] / lat["stock"]}
        for n in args.clients:
            for k, u in urls.items():
                figures[f"rps_{k}_{n}"] = asyncio.run(throughput(u, picture, n,
                                                                 args.per_client))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    for k, v in figures.items():
        print(f"{k}: {v:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
