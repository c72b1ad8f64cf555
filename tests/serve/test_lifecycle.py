"""Server life cycle over real HTTP: /ping before and after loading, overload answered 503,
and `codetune serve` as a subprocess (how the local workflow runner starts it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from codetune.serve import ServeConfig, ServerThread
from codetune.serve.app import default_load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gated(random_adapter):
    """A server whose model load waits for ``gate``: a deterministic 'still loading' window.
    Tiny queue (1) and batch size (1) so overload is easy to reach."""
    gate = threading.Event()

    def load(cfg):
        assert gate.wait(120), "test never opened the gate"
        return default_load(cfg)

    cfg = ServeConfig.from_env(
        adapters={"rand": str(random_adapter)},
        queue_size=1,
        max_batch_size=1,
        max_new_tokens_cap=32,
        default_max_new_tokens=4,
        torch_threads=1,
    )
    with ServerThread(cfg, load_fn=load) as srv:
        yield srv, gate


def test_ping_is_503_until_loaded_and_warmed_then_200(gated):
    # Guards: SageMaker must not route traffic before the model can answer: /ping and
    # /invocations are 503 while loading, /ping turns 200 after load + warm-up.
    srv, gate = gated
    with httpx.Client(base_url=srv.url, timeout=60, trust_env=False) as c:
        r = c.get("/ping")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = c.post("/invocations", json={"inputs": "def f():"})
        assert r.status_code == 503 and "Retry-After" in r.headers
        gate.set()
        deadline = time.monotonic() + 180
        while c.get("/ping").status_code != 200:
            assert time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.2)
        assert c.post("/invocations", json={"inputs": "def f():"}).status_code == 200


def test_overload_is_503_with_retry_after_at_once(gated):
    # Guards: with the queue full, extra requests are refused immediately (503 + Retry-After)
    # instead of piling up; admitted ones still succeed and the server stays healthy.
    srv, gate = gated
    gate.set()
    srv.wait_ready()
    results = []

    def one():
        with httpx.Client(base_url=srv.url, timeout=120, trust_env=False) as c:
            t0 = time.perf_counter()
            r = c.post("/invocations", json={"inputs": "x", "parameters": {"max_new_tokens": 16}})
            results.append((r.status_code, r.headers.get("Retry-After"), time.perf_counter() - t0))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == 200]
    assert refused and served and len(refused) + len(served) == 8
    assert all(r[1] == "1" for r in refused)
    assert max(r[2] for r in refused) < min(r[2] for r in served)  # refused without waiting
    with httpx.Client(base_url=srv.url, timeout=60, trust_env=False) as c:
        assert c.get("/ping").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_codetune_serve_subprocess_answers_and_stops(random_adapter):
    # Guards: the contract the local runner relies on: `codetune serve --adapter DIR --port P`
    # comes up, /ping turns 200, a request is answered by the adapter, SIGTERM stops it.
    port = _free_port()
    cmd = [sys.executable, "-m", "codetune.cli", "serve", "--adapter", str(random_adapter)]
    cmd += ["--port", str(port), "--set", "default_max_new_tokens=2", "--set", "torch_threads=1"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ}, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
            while True:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "codetune serve never became healthy"
                try:
                    if c.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            r = c.post("/invocations", json={"inputs": "def f():"})
            assert r.status_code == 200
            assert r.headers["X-Codetune-Model"] == random_adapter.name
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status reports it.
    assert proc.returncode in (0, -signal.SIGTERM), out[-2000:]
    assert '"event": "request"' in out  # JSON access lines on the server's stderr
