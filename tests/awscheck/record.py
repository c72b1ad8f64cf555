"""Record every boto3 call made while a ``recording()`` block runs, with the principal making it.

Each botocore client created inside gets a handler on ``before-parameter-build`` (the API
parameters as the code passed them; ``before-call`` carries only the serialized HTTP request),
so what is recorded is what AWS would receive, whichever code made the client.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import botocore.session

_principal: contextvars.ContextVar[str] = contextvars.ContextVar("principal", default="")


@dataclass(frozen=True)
class Call:
    principal: str  # who signs the request: a Lambda's name, "user", ...
    service: str  # botocore service name ("sagemaker", "s3", "application-autoscaling")
    operation: str  # "CreateModel"
    params: dict
    region: str


@contextmanager
def as_principal(name: str) -> Iterator[None]:
    """Calls made inside are attributed to ``name``."""
    token = _principal.set(name)
    try:
        yield
    finally:
        _principal.reset(token)


@contextmanager
def recording() -> Iterator[list[Call]]:
    """Yield the list the calls made inside are appended to (clients created inside only)."""
    calls: list[Call] = []
    original = botocore.session.Session.create_client

    def create_client(self, service_name, *args, **kwargs):
        c = original(self, service_name, *args, **kwargs)
        region = c.meta.region_name

        def record(params, model, **_):
            calls.append(Call(_principal.get(), service_name, model.name, _plain(params), region))

        c.meta.events.register("before-parameter-build", record)
        return c

    botocore.session.Session.create_client = create_client
    try:
        yield calls
    finally:
        botocore.session.Session.create_client = original


def _plain(node):
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    if isinstance(node, bytes | bytearray):
        return f"<{len(node)} bytes>"
    if hasattr(node, "read"):
        return "<stream>"
    return node
