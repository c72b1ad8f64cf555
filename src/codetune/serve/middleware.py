"""ASGI middleware in front of every route: request ids, body guards, one JSON log line.

For the invocation routes it rejects, before any handler parses anything:
a body over ``max_body_bytes`` (413, without reading past the limit), a content type other than
JSON (415), bytes that are not UTF-8 JSON (400) and JSON that is not an object (400). What gets
through is replayed to the handler unchanged, so the container-standards transforms always see
a JSON object.

In Batch Transform mode (``ServeConfig.batch``) an invocation's error answer keeps its
``{"error": ...}`` body but goes out with status 200 (the original status in
``X-Codetune-Status``): SageMaker writes a 200 answer as the record's output line, while a
failed invocation fails the whole job. 503 (still loading, at capacity) stays 503: it is the
server's state, not the record's result, and SageMaker may retry it.

Every request (except healthy pings, which SageMaker sends every few seconds) produces one log
line on the ``codetune.serve.access`` logger: a JSON object with request id, path, status,
adapter, tokens in/out, queue and generation seconds, time to first token and the prefill that
produced it, total seconds and any error message.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

log = logging.getLogger("codetune.serve.access")

INVOCATION_PATHS = ("/invocations", "/invocations-response-stream", "/v1/chat/completions")
REQUEST_ID_HEADERS = (b"x-amzn-sagemaker-inference-id", b"x-request-id")


class GuardMiddleware:
    def __init__(self, app, config):
        self.app = app
        self.max_body = config.max_body_bytes
        self.batch = config.batch

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = next(
            (headers[h].decode("latin-1") for h in REQUEST_ID_HEADERS if headers.get(h)), None
        )
        rid = (rid or uuid.uuid4().hex)[:128]
        info = scope.setdefault("state", {}).setdefault("codetune", {})
        info["request_id"] = rid
        t0 = time.perf_counter()
        status = {"code": 500}
        invocation = scope["method"] == "POST" and scope["path"] in INVOCATION_PATHS

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = code = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
                if self.batch and invocation and code >= 400 and code != 503:
                    message["headers"].append((b"x-codetune-status", str(code).encode()))
                    message["status"] = 200
            await send(message)

        try:
            if invocation:
                body, problem = await self._read_checked(headers, receive)
                if problem:
                    code, msg = problem
                    info["error"] = msg
                    await _send_error(send_wrapper, code, msg)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            if not (scope["path"] == "/ping" and status["code"] == 200):
                _log_line(scope, status["code"], info, time.perf_counter() - t0)

    async def _read_checked(self, headers, receive):
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype != "application/json":
            return b"", (
                415,
                f"Content-Type must be application/json, got {ctype or 'none'!r}; send a JSON body",
            )
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    return b"", (413, self._too_big())
            except ValueError:
                return b"", (400, "Content-Length is not a number")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            part = msg.get("body", b"")
            size += len(part)
            if size > self.max_body:
                return b"", (413, self._too_big())
            chunks.append(part)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        if not body:
            return body, (400, "empty body; send a JSON object with inputs or messages")
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return body, (400, "the body is not UTF-8 text; send UTF-8 encoded JSON")
        except json.JSONDecodeError as e:
            return body, (400, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}")
        if not isinstance(data, dict):
            return body, (
                400,
                f"the body is a JSON {type(data).__name__}; send a JSON object with inputs "
                "or messages",
            )
        return body, None

    def _too_big(self) -> str:
        return f"request body larger than {self.max_body} bytes; send a shorter prompt"


def _replay(body: bytes, receive):
    """Hand the buffered body to the app once, then pass through to the real channel (a
    streaming response listens on it for the client's disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_error(send, code: int, message: str) -> None:
    payload = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _log_line(scope, status: int, info: dict, seconds: float) -> None:
    line = {
        "event": "request",
        "request_id": info.get("request_id"),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "adapter": info.get("adapter"),
        "style": info.get("style"),
        "tokens_in": info.get("tokens_in"),
        "tokens_out": info.get("tokens_out"),
        "queue_s": info.get("queue_s"),
        "generate_s": info.get("generate_s"),
        "batch_size": info.get("batch_size"),
        "ttft_s": info.get("ttft_s"),
        "prefill_s": info.get("prefill_s"),
        "total_s": round(seconds, 4),
    }
    if info.get("error"):
        line["error"] = info["error"]
    log.info(json.dumps(line))
