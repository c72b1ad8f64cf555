"""The inference server: FastAPI + AWS's model-hosting-container-standards.

Routes (SageMaker hosting contract, plus conveniences for local clients):

- ``GET /ping`` — 200 only after the model loaded and a warm-up generation succeeded; 503 before.
- ``POST /invocations`` — TGI-style or OpenAI-chat payloads; ``"stream": true`` (or
  ``Accept: text/event-stream``) answers with server-sent events. SageMaker's
  InvokeEndpointWithResponseStream is the public ``/invocations-response-stream`` API: SageMaker
  forwards it to the container's ``/invocations`` and relays the chunked body as PayloadParts,
  so the same route serves both. ``POST /invocations-response-stream`` (always streams) and
  ``POST /v1/chat/completions`` are aliases for local clients.
- ``POST /adapters`` ``{"name", "src"}`` and ``DELETE /adapters/{name}`` — LoRA adapter
  registration as SageMaker inference components call it; ``GET /adapters`` lists them.

How the container-standards package is used (version 0.1.16):
``register_ping_handler`` / ``register_invocation_handler`` mark our handlers as the framework
defaults; ``inject_adapter_id`` copies the ``X-Amzn-SageMaker-Adapter-Identifier`` header into the
body; ``register_load_adapter_handler`` / ``register_unload_adapter_handler`` validate the
SageMaker adapter API and mount ``POST /adapters`` / ``DELETE /adapters/{adapter_name}``;
``bootstrap(app)`` mounts them and applies customer overrides (``CUSTOM_FASTAPI_*_HANDLER``,
``model.py`` in the model dir). One deliberate deviation: the header is injected into a private
body key (:data:`HEADER_KEY`), not into ``model``, because the package's replace mode writes
``null`` into the target when the header is absent, which would erase an OpenAI client's own
``model`` choice; the handler then reads the three sources itself and rejects disagreement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from codetune.errors import CodetuneError
from codetune.serve.config import BASE_ALIASES, ServeConfig
from codetune.serve.engine import Engine, QueueFull, Sampling, Stream, make_engine
from codetune.serve.schemas import ChatRequest, TGIRequest, check_limits, describe

log = logging.getLogger("codetune.serve")
access_log = logging.getLogger("codetune.serve.access")

HEADER_KEY = "__sagemaker_adapter_identifier__"  # where inject_adapter_id puts the header
MODEL_HEADER = "X-Codetune-Model"  # names the adapter (or "base") that answered
BASE_NAME = "base"
RETRY_AFTER_S = 1


class ApiError(Exception):
    """A request that cannot be served; carries the HTTP status and what to change."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", headers=None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


def error_response(status: int, message: str, kind: str, headers: dict | None = None):
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}},
        status_code=status,
        headers=headers,
    )


@dataclass
class ServerState:
    """What the handlers share. ``engine`` can answer once ``ready`` is set."""

    config: ServeConfig
    engine: Engine
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    default_model: str | None = None  # adapter name, or None for the base model
    base_ids: set[str] = field(default_factory=set)

    def known_adapters(self) -> set[str]:
        return set(self.engine.adapters()) if self.ready.is_set() else set()

    def resolve(self, name: str | None) -> str | None:
        """Adapter name for a requested model name (None = base); raises ApiError(400)."""
        if name is None:
            name = self.default_model
            if name is None:
                return None
        if name in BASE_ALIASES or name in self.base_ids:
            return None
        if name in self.known_adapters():
            return name
        known = ", ".join([BASE_NAME, *sorted(self.known_adapters())])
        raise ApiError(
            400,
            f"unknown model or adapter {name!r}; known: {known}. Name one of them in the "
            "X-Amzn-SageMaker-Adapter-Identifier header, parameters.adapter_id or model.",
            "unknown_adapter",
        )


def default_load(config: ServeConfig):
    """Load base model + adapters as ``config`` says with ``codetune.generation`` (the
    transformers engine's loader)."""
    from codetune import generation
    from codetune.serve.loading import resolve_sources

    base, adapters = resolve_sources(config)
    return generation.load_model(
        base, adapters, quantization=config.quantization, dtype=config.dtype
    )


def _load_and_warm(state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
    """Runs on a background thread so /ping can answer 503 while the model loads; the
    warm-up runs on the server's event loop (``loop``), where requests will run."""
    cfg = state.config
    try:
        t0 = time.perf_counter()
        engine = state.engine
        engine.load()
        asyncio.run_coroutine_threadsafe(engine.warm_up(), loop).result()
        state.base_ids = engine.base_names()
        adapters = engine.adapters()
        if cfg.default_model is not None:
            state.default_model = None if cfg.default_model in BASE_ALIASES else cfg.default_model
            if state.default_model and state.default_model not in adapters:
                raise CodetuneError(
                    f"default_model {cfg.default_model!r} is not a loaded adapter "
                    f"({', '.join(sorted(adapters)) or 'none loaded'})"
                )
        elif len(adapters) == 1:
            state.default_model = next(iter(adapters))
        state.ready.set()
        log.info(
            "ready in %.1fs: engine %s, base %s, adapters %s, default %s",
            time.perf_counter() - t0,
            engine.kind,
            engine.base_path,
            sorted(adapters),
            state.default_model or BASE_NAME,
        )
    except BaseException as e:  # /ping stays 503 and says why; SageMaker fails the deploy
        state.load_error = f"{type(e).__name__}: {e}"
        log.exception("model load failed")


# ---------------------------------------------------------------------------------------
# request parsing


@dataclass
class Parsed:
    style: str  # "tgi" | "chat"
    prompt: str
    prompt_ids: list[int]
    adapter: str | None
    sampling: Sampling
    stream: bool
    prompt_tokens: int
    req: object


def _choose(state: ServerState, header: str | None, body_choice: str | None, field_name: str):
    given = {k: v for k, v in (("header", header), (field_name, body_choice)) if v}
    resolved = {k: state.resolve(v) for k, v in given.items()}
    if len(set(resolved.values())) > 1:
        raise ApiError(
            400,
            f"conflicting model choice: X-Amzn-SageMaker-Adapter-Identifier={header!r} but "
            f"{field_name}={body_choice!r}; send only one of them",
        )
    if resolved:
        return next(iter(resolved.values()))
    return state.resolve(None)


def parse_request(state: ServerState, body: dict, accept: str, force_stream: bool) -> Parsed:
    """Validate a body (already a JSON object) into a generation job; raises ApiError."""
    cfg = state.config
    header = body.pop(HEADER_KEY, None)
    if "messages" in body and "inputs" in body:
        raise ApiError(400, "send either inputs (TGI style) or messages (chat style), not both")
    if "messages" in body:
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as e:
            raise ApiError(400, describe(e, ChatRequest)) from None
        adapter = _choose(state, header, req.model, "model")
        max_new = req.max_completion_tokens or req.max_tokens or cfg.default_max_new_tokens
        field_name = "max_tokens"
        stop = req.stop
        msgs = [m.model_dump() for m in req.messages]
        prompt = state.engine.render_chat(msgs)
        temperature = req.temperature if req.temperature is not None else 0.0
        top_p = req.top_p if req.top_p is not None else 1.0
        seed, stream, style = req.seed, req.stream, "chat"
    elif "inputs" in body:
        try:
            req = TGIRequest.model_validate(body)
        except ValidationError as e:
            raise ApiError(400, describe(e, TGIRequest)) from None
        p = req.parameters
        adapter = _choose(state, header, p.adapter_id, "parameters.adapter_id")
        max_new = p.max_new_tokens or cfg.default_max_new_tokens
        field_name = "parameters.max_new_tokens"
        stop = p.stop
        prompt = req.inputs
        temperature = p.temperature if p.temperature is not None else 0.0
        if p.do_sample is False:
            temperature = 0.0
        elif p.do_sample and temperature == 0.0:
            temperature = 1.0
        top_p = p.top_p if p.top_p is not None else 1.0
        seed, stream, style = p.seed, req.stream, "tgi"
    else:
        raise ApiError(
            400,
            'the body needs "inputs" (TGI style: {"inputs": "...", "parameters": {...}}) or '
            '"messages" (chat style: {"messages": [{"role": "user", "content": "..."}]})',
        )
    problem = check_limits(
        max_new, stop, cap=cfg.max_new_tokens_cap, max_stop=cfg.max_stop_sequences, field=field_name
    )
    if problem:
        raise ApiError(400, problem)
    ids = state.engine.encode(prompt)
    n_prompt = len(ids)
    ctx = state.engine.context_window
    if n_prompt + max_new > ctx:
        raise ApiError(
            400,
            f"the prompt is {n_prompt} tokens and {field_name} is {max_new}: together more "
            f"than the model's context window of {ctx} tokens. Shorten the prompt or lower "
            f"{field_name}.",
            "prompt_too_long",
        )
    stream = stream or force_stream or "text/event-stream" in (accept or "")
    if stream and cfg.batch:
        raise ApiError(
            400,
            "streaming is not available in batch transform (each answer is one output line); "
            'drop "stream": true from the record',
        )
    sampling = Sampling(max_new, float(temperature), float(top_p), tuple(stop or ()), seed)
    return Parsed(style, prompt, ids, adapter, sampling, stream, n_prompt, req)


# ---------------------------------------------------------------------------------------
# responses


def _model_name(adapter: str | None) -> str:
    return adapter or BASE_NAME


@dataclass
class Result:
    """A whole (non-streamed) answer."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None


def _completion_body(p: Parsed, gen, request_id: str) -> object:
    name = _model_name(gen.adapter)
    if p.style == "tgi":
        text = (p.prompt + gen.text) if p.req.parameters.return_full_text else gen.text
        item: dict = {"generated_text": text}
        if p.req.parameters.details:
            item["details"] = {
                "finish_reason": gen.finish_reason,
                "generated_tokens": gen.completion_tokens,
                "prompt_tokens": gen.prompt_tokens,
                "adapter": name,
            }
        return [item]
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": gen.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        },
    }


def batch_execution_parameters(config: ServeConfig, engine_kind: str) -> dict:
    """What ``GET /execution-parameters`` tells Batch Transform: one record per request (the
    body is one JSON request), as many requests at once as the engine decodes together (the
    continuous batch fills across concurrent requests), bodies up to ``max_body_bytes``."""
    rows = config.max_batch_size
    if not rows:
        from codetune.serve.continuous import DEFAULT_MAX_BATCH
        from codetune.serve.vllm_args import DEFAULT_MAX_NUM_SEQS

        rows = DEFAULT_MAX_NUM_SEQS if engine_kind == "vllm" else DEFAULT_MAX_BATCH
    return {
        "MaxConcurrentTransforms": rows,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": max(1, config.max_body_bytes // 2**20),
    }


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def create_app(config: ServeConfig, *, load_fn: Callable[[ServeConfig], object] | None = None):
    """The FastAPI app over the engine ``config.engine`` selects. The model loads on a
    background thread at start-up (for the transformers engine ``load_fn``, default
    :func:`default_load`); /ping answers 503 until it has loaded and warmed up."""
    import model_hosting_container_standards.sagemaker as sm

    from codetune.serve.middleware import GuardMiddleware

    state = ServerState(config, make_engine(config, load_fn=load_fn))

    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        t = threading.Thread(
            target=_load_and_warm, args=(state, loop), name="codetune-load", daemon=True
        )
        t.start()
        yield
        state.engine.close()

    app = FastAPI(title="codetune inference", lifespan=lifespan)
    app.state.codetune = state
    app.add_exception_handler(StarletteHTTPException, _http_error)
    _add_status_routes(app, state, sm)
    _add_invocation_routes(app, state, sm)
    _add_adapter_routes(app, state, sm)
    app.add_middleware(GuardMiddleware, config=config)
    sm.bootstrap(app)
    return app


async def _http_error(request: Request, exc: StarletteHTTPException):
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404:
        detail = f"no route {request.method} {request.url.path}; see /ping and /invocations"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, detail, "http_error", exc.headers)


def _add_status_routes(app: FastAPI, state: ServerState, sm) -> None:
    @app.get("/ping")
    @sm.register_ping_handler
    async def ping(raw_request: Request) -> Response:
        if state.ready.is_set():
            return JSONResponse({"status": "healthy", "adapters": sorted(state.known_adapters())})
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)

    # Batch Transform asks when the job leaves its execution parameters unset.
    @app.get("/execution-parameters")
    async def execution_parameters() -> Response:
        return JSONResponse(batch_execution_parameters(state.config, state.engine.kind))


def _add_invocation_routes(app: FastAPI, state: ServerState, sm) -> None:
    """/invocations (SageMaker's route), its streaming twin and the OpenAI-style route: one
    handler, :func:`_invoke`."""

    @app.post("/invocations")
    @sm.register_invocation_handler
    @sm.inject_adapter_id(HEADER_KEY)
    async def invocations(raw_request: Request) -> Response:
        return await _invoke(state, raw_request, force_stream=False)

    @app.post("/invocations-response-stream")
    @sm.inject_adapter_id(HEADER_KEY)
    async def invocations_stream(raw_request: Request) -> Response:
        return await _invoke(state, raw_request, force_stream=True)

    @app.post("/v1/chat/completions")
    @sm.inject_adapter_id(HEADER_KEY)
    async def chat_completions(raw_request: Request) -> Response:
        return await _invoke(state, raw_request, force_stream=False)


async def _invoke(state: ServerState, raw_request: Request, force_stream: bool) -> Response:
    """Parse, submit to the engine, answer whole or as a stream; errors carry their status
    (client mistakes 4xx, overload 503, timeout 504, anything unexpected 500 and logged)."""
    config = state.config
    info = raw_request.scope.setdefault("state", {}).setdefault("codetune", {})
    request_id = info.get("request_id") or uuid.uuid4().hex
    try:
        if not state.ready.is_set():
            raise ApiError(
                503,
                "the model is still loading; retry when GET /ping answers 200",
                "not_ready",
                {"Retry-After": str(RETRY_AFTER_S * 5)},
            )
        body = json.loads(await raw_request.body())
        p = parse_request(state, body, raw_request.headers.get("accept", ""), force_stream)
        info.update(adapter=_model_name(p.adapter), tokens_in=p.prompt_tokens, style=p.style)
        stream = _submit(state, p)
        if p.stream:
            return _stream(config, p, stream, request_id, info)
        try:
            res = await asyncio.wait_for(_collect(stream), timeout=config.request_timeout_s)
        except TimeoutError:
            raise _timeout(config) from None
        finally:
            stream.cancel()  # no-op once finished; frees the row on timeout
            _timings(stream, info)
        info.update(tokens_out=res.completion_tokens)
        return JSONResponse(
            _completion_body(p, res, request_id),
            headers={MODEL_HEADER: _model_name(res.adapter)},
        )
    except ApiError as e:
        info["error"] = e.message
        return error_response(e.status, e.message, e.kind, e.headers)
    except CodetuneError as e:  # e.g. an adapter removed while the request waited
        info["error"] = str(e)
        return error_response(400, str(e), "invalid_request_error")
    except Exception:
        log.exception("request %s failed", request_id)
        info["error"] = traceback.format_exc(limit=1).strip().splitlines()[-1]
        return error_response(
            500, f"internal error (request id {request_id}); see the server log", "internal"
        )


def _submit(state: ServerState, p: Parsed) -> Stream:
    try:
        return state.engine.submit(p.prompt_ids, p.adapter, p.sampling)
    except QueueFull as e:
        raise ApiError(
            503,
            f"server is at capacity ({e}); retry after {RETRY_AFTER_S}s",
            "overloaded",
            {"Retry-After": str(RETRY_AFTER_S)},
        ) from None


def _timeout(config: ServeConfig) -> ApiError:
    return ApiError(
        504,
        f"no answer within {config.request_timeout_s:.0f}s; lower max_new_tokens or retry",
        "timeout",
    )


async def _collect(stream: Stream) -> Result:
    parts, last = [], None
    async for d in stream:
        parts.append(d.text)
        last = d
    return Result(
        "".join(parts),
        last.finish_reason,
        stream.prompt_tokens,
        last.completion_tokens,
        stream.adapter,
    )


def _timings(stream: Stream, info: dict) -> None:
    start = stream.admitted or time.perf_counter()
    info["queue_s"] = round(start - stream.enqueued, 4)
    if stream.admitted and stream.finished:
        info["generate_s"] = round(stream.finished - stream.admitted, 4)
    info["batch_size"] = stream.batch_size
    if stream.first_token is not None:
        info["ttft_s"] = round(stream.first_token - stream.enqueued, 4)
    if stream.prefill_s is not None:
        info["prefill_s"] = round(stream.prefill_s, 4)


def _stream(
    config: ServeConfig, p: Parsed, stream: Stream, request_id: str, info: dict
) -> Response:
    """Server-sent events, one per delta the engine produces (no re-prefill: the engine
    keeps the row in its batch from the first token to the last)."""
    name = _model_name(p.adapter)
    created = int(time.time())
    return StreamingResponse(
        _events(config, p, stream, request_id, info, name, created),
        media_type="text/event-stream",
        headers={MODEL_HEADER: name, "Cache-Control": "no-cache"},
    )


async def _events(
    config: ServeConfig,
    p: Parsed,
    stream: Stream,
    request_id: str,
    info: dict,
    name: str,
    created: int,
):
    """The event stream: OpenAI chunks for chat requests, TGI token events otherwise; an
    error after the first byte is sent as an event (the status is already 200)."""

    def event(delta: dict, finish: str | None) -> bytes:
        return _sse(
            {
                "id": f"chatcmpl-{request_id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    text, produced, finish = "", 0, "length"
    if p.style == "chat":
        yield event({"role": "assistant", "content": ""}, None)
    it = aiter(stream)
    try:
        while True:
            try:
                d = await asyncio.wait_for(anext(it), timeout=config.request_timeout_s)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise _timeout(config) from None
            text += d.text
            if d.text:
                if p.style == "chat":
                    yield event({"content": d.text}, None)
                else:
                    yield _sse({"token": {"text": d.text}, "generated_text": None})
            if d.finish_reason is not None:
                finish, produced = d.finish_reason, d.completion_tokens
        info.update(tokens_out=produced)
        if p.style == "chat":
            yield event({}, finish)
        else:
            yield _sse(
                {
                    "token": {"text": ""},
                    "generated_text": text,
                    "details": {"finish_reason": finish, "generated_tokens": produced},
                }
            )
        yield b"data: [DONE]\n\n"
    except ApiError as e:
        info["error"] = e.message
        yield _sse({"error": {"message": e.message, "type": e.kind, "code": e.status}})
    except CodetuneError as e:
        info["error"] = str(e)
        yield _sse({"error": {"message": str(e), "type": "invalid_request_error"}})
    except Exception:
        log.exception("stream %s failed", request_id)
        info["error"] = "internal error while streaming"
        yield _sse({"error": {"message": "internal error", "type": "internal"}})
    finally:
        stream.cancel()  # the client went away, or we are done: free the row
        _timings(stream, info)


def _add_adapter_routes(app: FastAPI, state: ServerState, sm) -> None:
    """GET /adapters here; POST /adapters and DELETE /adapters/{name} through the
    container-standards handlers (mounted by ``sm.bootstrap``)."""

    @app.get("/adapters")
    async def list_adapters() -> Response:
        if not state.ready.is_set():
            return error_response(503, "the model is still loading", "not_ready")
        return JSONResponse(
            {
                "base": state.engine.base_path,
                "engine": state.engine.kind,
                "default": _model_name(state.default_model),
                "adapters": [
                    {"name": n, "src": d} for n, d in sorted(state.engine.adapters().items())
                ],
            }
        )

    @sm.register_load_adapter_handler(request_shape={"name": "body.name", "src": "body.src"})
    async def register_adapter(req, raw_request: Request) -> Response:
        return await _register_adapter(state, req)

    @sm.register_unload_adapter_handler(request_shape={"name": "path_params.adapter_name"})
    async def unregister_adapter(req, raw_request: Request) -> Response:
        return await _unregister_adapter(state, req)


async def _register_adapter(state: ServerState, req) -> Response:
    from codetune.serve.loading import adapter_source

    if not state.ready.is_set():
        return error_response(503, "the model is still loading", "not_ready")
    name, src = req.name, req.src
    if name in BASE_ALIASES or name in state.base_ids or "/" in name:
        return error_response(400, f"adapter name {name!r} is reserved", "invalid_name")
    if name in state.known_adapters():
        return error_response(
            409,
            f"adapter {name!r} already exists; DELETE /adapters/{name} first to replace it",
            "conflict",
        )
    try:
        local = await asyncio.to_thread(adapter_source, src)
        await state.engine.add_adapter(name, local)
    except CodetuneError as e:
        return error_response(400, str(e), "invalid_adapter")
    except Exception as e:
        log.exception("registering adapter %s from %s failed", name, src)
        return error_response(400, f"could not load adapter from {src}: {e}", "invalid_adapter")
    log.info("registered adapter %s from %s", name, src)
    return Response(status_code=200)


async def _unregister_adapter(state: ServerState, req) -> Response:
    if not state.ready.is_set():
        return error_response(503, "the model is still loading", "not_ready")
    name = req.name
    if name not in state.known_adapters():
        known = ", ".join(sorted(state.known_adapters())) or "none"
        return error_response(
            404, f"adapter {name!r} is not registered; registered: {known}", "not_found"
        )
    await state.engine.remove_adapter(name)
    log.info("unregistered adapter %s", name)
    return Response(status_code=200)
