"""Inference server: SageMaker hosting contract, TGI and OpenAI chat payloads, LoRA adapters
by name, continuous batching with per-token streaming, on one of two engines behind the same
front (``codetune.serve.engine``: transformers on CPU, vLLM on GPU). See ``codetune.serve.app``
for the routes.

- :func:`create_app` (``ServeConfig`` -> FastAPI app)
- :class:`ServerThread` (run it on a background thread; ``port=0`` picks a free port)
- ``codetune serve`` / the image's ``serve`` command run it in the foreground.
"""

from __future__ import annotations

from codetune.serve.config import ServeConfig

__all__ = ["ServeConfig", "ServerThread", "create_app"]


def __getattr__(name: str):
    # Lazy: importing codetune.serve (e.g. for ServeConfig) must not import FastAPI/uvicorn.
    if name == "create_app":
        from codetune.serve.app import create_app

        return create_app
    if name == "ServerThread":
        from codetune.serve.runner import ServerThread

        return ServerThread
    raise AttributeError(name)
