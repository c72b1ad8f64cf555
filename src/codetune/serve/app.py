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
from concurrent.futures import Future
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from codetune.errors import CodetuneError
from codetune.serve.batcher import Batcher, Job, QueueFull, SamplingKey
from codetune.serve.config import BASE_ALIASES, ServeConfig
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
    """What the handlers share. ``lm`` and ``batcher`` exist once ``ready`` is set."""

    config: ServeConfig
    lm: object | None = None
    batcher: Batcher | None = None
    count_tokenizer: object | None = None  # a second tokenizer: the worker owns lm.tokenizer
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    default_model: str | None = None  # adapter name, or None for the base model
    base_ids: set[str] = field(default_factory=set)

    def known_adapters(self) -> set[str]:
        return set(self.lm.adapters) if self.lm is not None else set()

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
    """Load base model + adapters as ``config`` says (model_dir scan unless adapters given)."""
    from codetune import generation
    from codetune.paths import SageMakerPaths
    from codetune.serve.loading import discover_adapters, is_full_model, local_source

    adapters = {n: local_source(d) for n, d in config.adapters.items()}
    base = config.base_model
    if not adapters:
        model_dir = config.model_dir or str(SageMakerPaths.from_env().model_dir)
        adapters = discover_adapters(model_dir, config.adapter_name)
        if base is None and is_full_model(model_dir):
            base = model_dir
        log.info("model dir %s: adapters %s", model_dir, sorted(adapters))
    if base and base.startswith("s3://"):
        base = local_source(base)
    return generation.load_model(base, adapters, quantization=config.quantization)


def _make_generate_fn(state: ServerState):
    from codetune import generation

    def run(prompts, adapters, key: SamplingKey):
        return generation.generate(
            state.lm,
            prompts,
            adapters=adapters,
            max_new_tokens=key.max_new_tokens,
            temperature=key.temperature,
            top_p=key.top_p,
            stop=list(key.stop) or None,
            seed=key.seed,
        )

    return run


def _load_and_warm(state: ServerState, load_fn: Callable[[ServeConfig], object]) -> None:
    """Runs on a background thread so /ping can answer 503 while the model loads."""
    from transformers import AutoTokenizer

    from codetune import generation

    cfg = state.config
    try:
        t0 = time.perf_counter()

        def set_threads() -> None:
            if cfg.torch_threads:
                import torch

                torch.set_num_threads(cfg.torch_threads)

        set_threads()
        lm = load_fn(cfg)
        state.lm = lm
        state.count_tokenizer = AutoTokenizer.from_pretrained(lm.base_path)
        state.base_ids = {lm.base_path, lm.base_path.rstrip("/").rsplit("/", 1)[-1]}
        for d in lm.adapters.values():
            named = generation.adapter_base(d)
            if named:
                state.base_ids |= {named, named.rstrip("/").rsplit("/", 1)[-1]}
        if cfg.default_model is not None:
            state.default_model = None if cfg.default_model in BASE_ALIASES else cfg.default_model
            if state.default_model and state.default_model not in lm.adapters:
                raise CodetuneError(
                    f"default_model {cfg.default_model!r} is not a loaded adapter "
                    f"({', '.join(sorted(lm.adapters)) or 'none loaded'})"
                )
        elif len(lm.adapters) == 1:
            state.default_model = next(iter(lm.adapters))
        if cfg.warmup:
            # One real generation through every code path the first request would take.
            rows = [None, *sorted(lm.adapters)[:1]]
            generation.generate(lm, ["Hello"] * len(rows), adapters=rows, max_new_tokens=1)
        state.batcher = Batcher(
            _make_generate_fn(state),
            state.known_adapters,
            max_batch_size=cfg.max_batch_size,
            max_wait_s=cfg.max_wait_ms / 1000.0,
            queue_size=cfg.queue_size,
            on_start=set_threads,
        )
        state.batcher.start()
        state.ready.set()
        log.info(
            "ready in %.1fs: base %s, adapters %s, default %s",
            time.perf_counter() - t0,
            lm.base_path,
            sorted(lm.adapters),
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
    adapter: str | None
    key: SamplingKey
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
    from codetune.prompts import render_chat

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
        prompt = render_chat(state.count_tokenizer, msgs, add_generation_prompt=True)
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
    n_prompt = len(state.count_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ctx = state.lm.context_window
    if n_prompt + max_new > ctx:
        raise ApiError(
            400,
            f"the prompt is {n_prompt} tokens and {field_name} is {max_new}: together more "
            f"than the model's context window of {ctx} tokens. Shorten the prompt or lower "
            f"{field_name}.",
            "prompt_too_long",
        )
    stream = stream or force_stream or "text/event-stream" in (accept or "")
    key = SamplingKey(max_new, float(temperature), float(top_p), tuple(stop or ()), seed)
    return Parsed(style, prompt, adapter, key, stream, n_prompt, req)


# ---------------------------------------------------------------------------------------
# responses


def _model_name(adapter: str | None) -> str:
    return adapter or BASE_NAME


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


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def create_app(config: ServeConfig, *, load_fn: Callable[[ServeConfig], object] | None = None):
    """The FastAPI app. The model loads on a background thread at start-up (``load_fn``,
    default :func:`default_load`); /ping answers 503 until it has loaded and warmed up."""
    import model_hosting_container_standards.sagemaker as sm

    state = ServerState(config)
    load_fn = load_fn or default_load

    async def lifespan(app: FastAPI):
        t = threading.Thread(
            target=_load_and_warm, args=(state, load_fn), name="codetune-load", daemon=True
        )
        t.start()
        yield
        if state.batcher is not None:
            state.batcher.stop()

    app = FastAPI(title="codetune inference", lifespan=lifespan)
    app.state.codetune = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /ping and /invocations"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, detail, "http_error", exc.headers)

    # -- /ping ---------------------------------------------------------------------------
    @app.get("/ping")
    @sm.register_ping_handler
    async def ping(raw_request: Request) -> Response:
        if state.ready.is_set():
            return JSONResponse({"status": "healthy", "adapters": sorted(state.known_adapters())})
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)

    # -- /invocations --------------------------------------------------------------------
    async def _invoke(raw_request: Request, force_stream: bool) -> Response:
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
            if p.stream:
                return await _stream(p, request_id, info)
            job = _submit(Job(p.prompt, p.adapter, p.key))
            gen = await _await(job, info)
            info.update(tokens_out=gen.completion_tokens)
            return JSONResponse(
                _completion_body(p, gen, request_id),
                headers={MODEL_HEADER: _model_name(gen.adapter)},
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

    def _submit(job: Job, force: bool = False) -> Job:
        try:
            return state.batcher.submit(job, force=force)
        except QueueFull as e:
            raise ApiError(
                503,
                f"server is at capacity ({e}); retry after {RETRY_AFTER_S}s",
                "overloaded",
                {"Retry-After": str(RETRY_AFTER_S)},
            ) from None

    async def _await(job: Job, info: dict):
        try:
            gen = await asyncio.wait_for(
                asyncio.wrap_future(job.future), timeout=config.request_timeout_s
            )
        except TimeoutError:
            job.future.cancel()
            raise ApiError(
                504,
                f"no answer within {config.request_timeout_s:.0f}s; lower max_new_tokens or retry",
                "timeout",
            ) from None
        finally:
            start = job.started or time.perf_counter()
            info["queue_s"] = round(info.get("queue_s", 0.0) + start - job.enqueued, 4)
            if job.finished and job.started:
                info["generate_s"] = round(
                    info.get("generate_s", 0.0) + job.finished - job.started, 4
                )
            info["batch_size"] = job.batch_size
        return gen

    async def _stream(p: Parsed, request_id: str, info: dict) -> Response:
        """Stream in chunks of ``stream_chunk_tokens``: each chunk is one generate() call on
        prompt + text so far, batched with other requests (generate() has no token callback)."""
        chunk = config.stream_chunk_tokens

        def key_for(remaining: int) -> SamplingKey:
            return SamplingKey(
                min(chunk, remaining), p.key.temperature, p.key.top_p, p.key.stop, p.key.seed
            )

        first = _submit(Job(p.prompt, p.adapter, key_for(p.key.max_new_tokens)))
        name = _model_name(p.adapter)
        created = int(time.time())

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

        async def events():
            text, produced, finish, job = "", 0, "length", first
            if p.style == "chat":
                yield event({"role": "assistant", "content": ""}, None)
            try:
                while True:
                    gen = await _await(job, info)
                    piece = gen.text
                    produced += gen.completion_tokens
                    hit = [s for s in p.key.stop if s in text + piece]
                    if hit:  # a stop sequence may straddle two chunks
                        cut = min((text + piece).find(s) for s in hit)
                        piece = (text + piece)[:cut][len(text) :]
                    text += piece
                    done = bool(hit) or gen.finish_reason == "stop"
                    done = done or gen.completion_tokens < job.key.max_new_tokens
                    if done:
                        finish = "stop"
                    if produced >= p.key.max_new_tokens:
                        done = True
                    if piece:
                        if p.style == "chat":
                            yield event({"content": piece}, None)
                        else:
                            yield _sse({"token": {"text": piece}, "generated_text": None})
                    if done:
                        break
                    job = _submit(
                        Job(p.prompt + text, p.adapter, key_for(p.key.max_new_tokens - produced)),
                        force=True,
                    )
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
            except Exception:
                log.exception("stream %s failed", request_id)
                info["error"] = "internal error while streaming"
                yield _sse({"error": {"message": "internal error", "type": "internal"}})

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={MODEL_HEADER: name, "Cache-Control": "no-cache"},
        )

    @app.post("/invocations")
    @sm.register_invocation_handler
    @sm.inject_adapter_id(HEADER_KEY)
    async def invocations(raw_request: Request) -> Response:
        return await _invoke(raw_request, force_stream=False)

    @app.post("/invocations-response-stream")
    @sm.inject_adapter_id(HEADER_KEY)
    async def invocations_stream(raw_request: Request) -> Response:
        return await _invoke(raw_request, force_stream=True)

    @app.post("/v1/chat/completions")
    @sm.inject_adapter_id(HEADER_KEY)
    async def chat_completions(raw_request: Request) -> Response:
        return await _invoke(raw_request, force_stream=False)

    # -- adapters ------------------------------------------------------------------------
    @app.get("/adapters")
    async def list_adapters() -> Response:
        if not state.ready.is_set():
            return error_response(503, "the model is still loading", "not_ready")
        lm = state.lm
        return JSONResponse(
            {
                "base": lm.base_path,
                "default": _model_name(state.default_model),
                "adapters": [{"name": n, "src": d} for n, d in sorted(lm.adapters.items())],
            }
        )

    @sm.register_load_adapter_handler(request_shape={"name": "body.name", "src": "body.src"})
    async def register_adapter(req, raw_request: Request) -> Response:
        from codetune import generation
        from codetune.serve.loading import local_source

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
            local = await asyncio.to_thread(local_source, src)
            fut: Future = state.batcher.call(lambda: generation.add_adapter(state.lm, name, local))
            await asyncio.wrap_future(fut)
        except CodetuneError as e:
            return error_response(400, str(e), "invalid_adapter")
        except Exception as e:
            log.exception("registering adapter %s from %s failed", name, src)
            return error_response(400, f"could not load adapter from {src}: {e}", "invalid_adapter")
        log.info("registered adapter %s from %s", name, src)
        return Response(status_code=200)

    @sm.register_unload_adapter_handler(request_shape={"name": "path_params.adapter_name"})
    async def unregister_adapter(req, raw_request: Request) -> Response:
        from codetune import generation

        if not state.ready.is_set():
            return error_response(503, "the model is still loading", "not_ready")
        name = req.name
        if name not in state.known_adapters():
            known = ", ".join(sorted(state.known_adapters())) or "none"
            return error_response(
                404, f"adapter {name!r} is not registered; registered: {known}", "not_found"
            )
        await asyncio.wrap_future(
            state.batcher.call(lambda: generation.remove_adapter(state.lm, name))
        )
        log.info("unregistered adapter %s", name)
        return Response(status_code=200)

    from codetune.serve.middleware import GuardMiddleware

    app.add_middleware(GuardMiddleware, config=config)
    sm.bootstrap(app)
    return app
