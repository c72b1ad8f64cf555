"""Batch inference over a JSONL of requests: one request body a line, one answer a line.

The contract is SageMaker Batch Transform's (``SplitType: Line``, ``BatchStrategy:
SingleRecord``, ``AssembleWith: Line``): every input line is POSTed as is to the inference
server's ``/invocations``, and the body of its answer is the output line at the same position.
A line is a TGI payload (``{"inputs", "parameters"}``) or a chat payload (``{"messages"}``)
and may name its own adapter (``parameters.adapter_id`` / ``model``), exactly as a real-time
request does. Answers that are errors (an unknown adapter, a prompt over the context window,
a line that is not JSON) are the server's ``{"error": {"message", "type", "code"}}`` bodies:
an unknown adapter lists the known ones and never falls back to the base model.

Locally :func:`run_batch` sends the lines to the server app itself, in this process
(:func:`in_process_server`: ``codetune.serve.create_app`` in Batch Transform mode, reached
through httpx's ASGI transport, no socket) or to a running ``codetune serve`` (``--url``);
parsing, validation, adapter routing and continuous batching are the server's own. Lines go
out ``MaxConcurrentTransforms`` at a time, the number the server's ``/execution-parameters``
asks of Batch Transform, so the engine's batch fills the same way as on SageMaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError

ADAPTER_HEADER = "X-Amzn-SageMaker-Adapter-Identifier"
STREAM_REFUSED = (
    "streaming is not available in batch transform (each answer is one output line); "
    'drop "stream": true from the record'
)
MAX_RETRIES_503 = 20  # "at capacity" / "still loading" answers are retried, not written


@dataclass(frozen=True)
class BatchSummary:
    lines: int
    answers: int
    errors: int
    seconds: float
    concurrency: int


def read_lines(path: Path) -> list[bytes]:
    """The records of a JSONL file: one per line, blank lines included (each gets an error
    line, so output line n always answers input line n). Raises CodetuneError if unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CodetuneError(f"cannot read the batch input {path}: {e.strerror}") from e
    if data.endswith(b"\n"):
        data = data[:-1]
    return [line.rstrip(b"\r") for line in data.split(b"\n")] if data else []


def requests_from_dataset(
    dataset: Path, *, split: str = "test", task: str = "bugfix", max_new_tokens: int = 256
) -> list[bytes]:
    """Chat requests from a prepared dataset: the prompt turns (every message but the
    answer) of each ``task`` record of ``<dataset>/<split>.jsonl``, in file order. Raises
    CodetuneError when the file is missing or holds no such record."""
    from codetune.io import read_jsonl

    path = Path(dataset) / f"{split}.jsonl"
    if not path.is_file():
        raise CodetuneError(
            f"--from-dataset {dataset}: no {split}.jsonl there (a `codetune prepare` output "
            "directory has train.jsonl, validation.jsonl and test.jsonl); check --split"
        )
    try:
        records = [r for r in read_jsonl(path) if r.get("task") == task]
    except ValueError as e:
        raise CodetuneError(f"--from-dataset: {e}") from e
    if not records:
        raise CodetuneError(f"--from-dataset: {path} has no {task!r} record; check --task")
    return [
        json.dumps({"messages": r["messages"][:-1], "max_tokens": max_new_tokens}).encode()
        for r in records
    ]


def with_job_model(line: bytes, model: str | None) -> bytes:
    """``line`` with the job's adapter filled in where the line names none (TGI:
    ``parameters.adapter_id``, chat: ``model``); a line that names one keeps its own, and a
    line that is not a JSON object goes as is (the server answers it with an error)."""
    if model is None:
        return line
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return line
    if not isinstance(body, dict):
        return line
    if "messages" in body:
        if body.get("model") is None:
            body["model"] = model
    elif "inputs" in body:
        params = body.setdefault("parameters", {})
        if not isinstance(params, dict):
            return line
        if params.get("adapter_id") is None:
            params["adapter_id"] = model
    else:
        return line
    return json.dumps(body).encode()


def _wants_stream(line: bytes) -> bool:
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(body, dict) and body.get("stream") is True


def error_line(message: str, kind: str = "invalid_request_error", code: int = 400) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


def _answer_line(status: int, content: bytes) -> bytes:
    """One output line from an answer: its JSON body re-serialized on one line (an error
    status keeps its ``{"error": ...}`` body); a non-JSON body becomes an error line."""
    try:
        body = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        text = content.decode("utf-8", "replace").strip()[:500]
        return error_line(f"HTTP {status}: {text or 'empty answer'}", "http_error", status)
    if status >= 400 and not (isinstance(body, dict) and "error" in body):
        return error_line(f"HTTP {status}: {json.dumps(body)[:500]}", "http_error", status)
    return json.dumps(body, ensure_ascii=False).encode()


async def execution_parameters(client) -> dict:
    """The server's ``GET /execution-parameters`` (what it asks of Batch Transform)."""
    r = await client.get("/execution-parameters")
    if r.status_code != 200:
        raise CodetuneError(
            f"the server answered GET /execution-parameters with {r.status_code}; is it a "
            "codetune server? (--concurrency N skips this)"
        )
    return r.json()


async def check_model(client, model: str) -> None:
    """Raise CodetuneError when the server does not know ``model`` (the server's own
    routing decides: one 1-token request names it)."""
    probe = {"inputs": "#", "parameters": {"max_new_tokens": 1, "adapter_id": model}}
    r = await client.post("/invocations", json=probe)
    try:
        err = r.json().get("error") if isinstance(r.json(), dict) else None
    except ValueError:
        err = None
    if err and err.get("type") == "unknown_adapter":
        raise CodetuneError(f"--model {model}: {err['message']}")


async def run_batch(
    client, lines: Sequence[bytes], *, concurrency: int, model: str | None = None
) -> tuple[list[bytes], BatchSummary]:
    """POST every line to ``client``'s ``/invocations``, at most ``concurrency`` at a time;
    returns the output lines in input order and a summary. ``model``: the job's adapter
    for lines that name none (checked first: an unknown one raises CodetuneError before any
    line runs)."""
    if concurrency < 1:
        raise CodetuneError(f"--concurrency must be >= 1, got {concurrency}")
    if model is not None:
        await check_model(client, model)
    t0 = time.perf_counter()
    out: list[bytes | None] = [None] * len(lines)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, line: bytes) -> None:
        if _wants_stream(line):
            out[i] = error_line(STREAM_REFUSED)
            return
        body = with_job_model(line, model)
        async with gate:
            for _ in range(MAX_RETRIES_503):
                r = await client.post(
                    "/invocations",
                    content=body,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                )
                if r.status_code != 503:
                    break
                await asyncio.sleep(min(5.0, float(r.headers.get("Retry-After", "1"))))
            out[i] = _answer_line(r.status_code, r.content)

    await asyncio.gather(*(one(i, line) for i, line in enumerate(lines)))
    errors = sum(1 for line in out if line.startswith(b'{"error"'))
    summary = BatchSummary(
        lines=len(lines),
        answers=len(lines) - errors,
        errors=errors,
        seconds=round(time.perf_counter() - t0, 3),
        concurrency=concurrency,
    )
    return out, summary


@contextlib.asynccontextmanager
async def in_process_server(config, *, load_fn=None) -> AsyncIterator[object]:
    """An httpx client on the inference app of this process, in Batch Transform mode: the
    app's lifespan runs (model load + warm-up on its background thread) and the client is
    handed out once the model is ready. Raises CodetuneError if the model fails to load."""
    import dataclasses

    import httpx

    from codetune.serve.app import create_app

    app = create_app(dataclasses.replace(config, batch=True), load_fn=load_fn)
    state = app.state.codetune
    async with app.router.lifespan_context(app):
        while not state.ready.is_set():
            if state.load_error:
                raise CodetuneError(f"the model did not load: {state.load_error}")
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://codetune-batch", timeout=None
        ) as client:
            yield client


@contextlib.asynccontextmanager
async def remote_server(url: str, timeout_s: float) -> AsyncIterator[object]:
    """An httpx client on a running server; raises CodetuneError when it is not ready."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, trust_env=False) as client:
        try:
            r = await client.get("/ping")
        except httpx.HTTPError as e:
            raise CodetuneError(f"--url {url}: no server answers ({e})") from e
        if r.status_code != 200:
            raise CodetuneError(f"--url {url}: GET /ping answered {r.status_code}: {r.text}")
        yield client


def write_lines(path: Path, lines: Sequence[bytes]) -> None:
    """The output JSONL, published atomically (nothing partial under ``path``)."""
    from codetune.io import write_text_atomic

    write_text_atomic(Path(path), "".join(line.decode("utf-8") + "\n" for line in lines))
