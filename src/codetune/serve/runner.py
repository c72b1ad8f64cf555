"""Running the server: in the foreground (``codetune serve``, the image's ``serve``) or on a
background thread (tests, the benchmark, and any in-process caller).

Out-of-process callers (the local workflow runner) start ``codetune serve --adapter DIR
--port 8080`` as a subprocess and poll ``GET /ping`` until it answers 200.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from codetune.serve.config import ServeConfig


class JsonFormatter(logging.Formatter):
    """Access lines are already JSON; other records become ``{"level", "logger", "message"}``
    (with the traceback, if any) so the whole stream is machine-readable in CloudWatch."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name == "codetune.serve.access":
            return msg
        out = {"level": record.levelname, "logger": record.name, "message": msg}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for codetune's loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("codetune", "model_hosting_container_standards"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level if name == "codetune" else logging.WARNING)
        lg.propagate = False


def run_foreground(config: ServeConfig, host: str, port: int) -> None:
    """Serve until interrupted (SIGTERM/SIGINT stop it cleanly)."""
    import uvicorn

    from codetune.serve.app import create_app

    configure_logging()
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # our middleware writes one JSON line per request
        timeout_keep_alive=75,  # longer than SageMaker's 60 s keep-alive (avoid reset races)
    )


class ServerThread:
    """uvicorn on a daemon thread. ``port=0`` picks a free port; ``url`` tells which.

    >>> with ServerThread(ServeConfig(adapters={"a": "/path"})) as srv:  # doctest: +SKIP
    ...     srv.wait_ready()
    ...     httpx.post(srv.url + "/invocations", json={"inputs": "def f():"})
    """

    def __init__(
        self, config: ServeConfig, *, host: str = "127.0.0.1", port: int = 0, load_fn=None
    ):
        import uvicorn

        from codetune.serve.app import create_app

        self.app = create_app(config, load_fn=load_fn)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host=host, port=port, log_config=None, access_log=False)
        )
        self.host = host
        self.port = port
        self._thread = threading.Thread(
            target=self.server.run, name="codetune-uvicorn", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state(self):
        return self.app.state.codetune

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start and wait until the socket listens (not until the model is ready)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        return self

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Block until /ping would answer 200; raises RuntimeError if loading failed."""
        deadline = time.monotonic() + timeout
        while not self.state.ready.wait(0.1):
            if self.state.load_error:
                raise RuntimeError(f"model load failed: {self.state.load_error}")
            if time.monotonic() > deadline:
                raise TimeoutError("server not ready in time")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
