"""The engine interface: what the HTTP front (``codetune.serve.app``) needs from whatever
generates tokens. Two implementations sit behind the same contract:

- ``transformers`` (:mod:`codetune.serve.continuous`): PEFT over Hugging Face models,
  continuous batching on one worker thread; the CPU engine (the demo, tests, CPU endpoints).
- ``vllm`` (:mod:`codetune.serve.vllm_engine`): vLLM's in-process ``AsyncLLM`` with its
  multi-LoRA batching; the GPU engine.

The front owns everything the client sees — payload parsing, validation and limits, adapter
routing (an unknown name is a 4xx, never a base answer), response shapes, logs. An engine
receives only requests the front has resolved: prompt token ids, ``None`` (the base model) or
a registered adapter name, and :class:`Sampling`. It answers with a :class:`Stream` of
:class:`Delta` s, one per new piece of text as tokens are produced.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from codetune.errors import ConfigError


class QueueFull(Exception):
    """The engine's bounded queue is full; the front answers 503 with Retry-After."""


@dataclass(frozen=True)
class Sampling:
    """Per-request decoding settings (rows of one batch may differ)."""

    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Delta:
    """New text of one answer. The last delta of a stream has ``finish_reason`` set ("stop":
    EOS or a stop sequence, "length": max_new_tokens) and the final token counts."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


@dataclass(eq=False)  # identity: engines key their running requests by stream
class Stream:
    """One request's answer, delivered as it is produced: ``async for delta in stream``.

    Engines push deltas from their own thread or task with :meth:`push`/:meth:`fail`; the
    front iterates and may :meth:`cancel` (client gone, timeout) — the engine then stops
    spending compute on the row at its next step."""

    prompt_tokens: int
    adapter: str | None
    enqueued: float = field(default_factory=time.perf_counter)
    admitted: float | None = None  # when the row joined the running batch
    first_token: float | None = None  # when its first token existed (the prefill's logits)
    prefill_s: float | None = None  # the admission forward that produced it
    finished: float | None = None
    batch_size: int = 0  # rows running when this one was admitted (itself included)
    cancelled: bool = False
    on_cancel: Callable[[], object] | None = None  # the engine's hook to stop the row
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def push(self, delta: Delta) -> None:
        """Thread-safe: hand a delta to the awaiting request."""
        if delta.finish_reason is not None:
            self.finished = time.perf_counter()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, delta)

    @staticmethod
    def push_many(items: list[tuple[Stream, Delta]]) -> None:
        """Thread-safe: :meth:`push` for several streams with one wake-up of their event loop
        (an engine step produces a delta for every running row)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Stream, Delta]]] = {}
        now = time.perf_counter()
        for stream, delta in items:
            if delta.finish_reason is not None:
                stream.finished = now
            by_loop.setdefault(stream._loop, []).append((stream, delta))
        for loop, group in by_loop.items():
            loop.call_soon_threadsafe(_deliver, group)

    def fail(self, error: BaseException) -> None:
        """Thread-safe: end the stream with ``error`` (raised in the awaiting request)."""
        self.finished = time.perf_counter()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, error)

    def cancel(self) -> None:
        if self.finished is None and not self.cancelled:
            self.cancelled = True
            if self.on_cancel is not None:
                self.on_cancel()

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return


def _deliver(items: list[tuple[Stream, Delta]]) -> None:
    for stream, delta in items:
        stream._queue.put_nowait(delta)


class Engine(ABC):
    """What the front calls. ``load`` runs on a background thread (``/ping`` answers 503 until
    it returns); everything else runs on the event loop after it."""

    kind: str
    base_path: str  # the base model's directory or id
    context_window: int  # prompt + max_new_tokens must fit
    _tokenizer = None  # the front's tokenizer (an engine's worker may own another)
    _named_bases: set[str] = frozenset()

    @abstractmethod
    def load(self) -> None:
        """Load the base model (blocking; runs on a background thread). Raises on failure."""

    @abstractmethod
    async def warm_up(self) -> None:
        """On the server's event loop after :meth:`load`: register the configured adapters
        and, when ``config.warmup``, run one real generation through each path the first
        request takes."""

    @abstractmethod
    def adapters(self) -> dict[str, str]:
        """Registered adapters, name -> local directory."""

    def base_names(self) -> set[str]:
        """Names that mean the base model besides "base": its path, directory name, and the
        base id the adapters name (``_named_bases``, set by ``load``)."""
        names = {self.base_path, *self._named_bases}
        return names | {n.rstrip("/").rsplit("/", 1)[-1] for n in names}

    def encode(self, text: str) -> list[int]:
        """Prompt token ids as the model will see them (no special tokens added), with the
        front's own tokenizer (``_tokenizer``, set by ``load``; the event loop owns it)."""
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def render_chat(self, messages: list[dict]) -> str:
        """Chat messages rendered with the model's template, generation prompt appended."""
        from codetune.prompts import render_chat

        return render_chat(self._tokenizer, messages, add_generation_prompt=True)

    @abstractmethod
    def submit(self, prompt_ids: list[int], adapter: str | None, sampling: Sampling) -> Stream:
        """Start generating; must be called on the event loop. Raises QueueFull when the
        engine's queue is full, CodetuneError for an adapter that is not registered."""

    @abstractmethod
    async def add_adapter(self, name: str, local_dir: str) -> None:
        """Register an adapter; raises CodetuneError (the client's fault: bad files, a rank
        over the engine's limit) with a message saying what to change."""

    @abstractmethod
    async def remove_adapter(self, name: str) -> None:
        """Unregister an adapter; requests still running on it end with an error."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine; waiting and running requests end with an error."""

    def stats(self) -> dict:
        """Counters for tests, logs and the benchmark (engine-specific keys)."""
        return {}

    async def _warm_generations(self) -> None:
        """Generate two tokens with the base, then with the first adapter (one at a time:
        ``queue_size`` may be 1)."""
        ids = self.encode("Hello")
        for adapter in [None, *sorted(self.adapters())[:1]]:
            async for _ in self.submit(ids, adapter, Sampling(max_new_tokens=2)):
                pass


ENGINES = ("auto", "transformers", "vllm")


def choose_engine(requested: str) -> str:
    """``auto`` means vLLM when it is installed and a CUDA GPU is visible, else transformers.

    Raises ConfigError for an unknown name or for ``vllm`` without vLLM installed."""
    import importlib.util

    if requested not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if requested == "vllm" and not has_vllm:
        raise ConfigError(
            "engine=vllm but vLLM is not installed in this environment; use the vLLM "
            "inference image (ENGINE=vllm build arg) or engine=transformers"
        )
    if requested != "auto":
        return requested
    if has_vllm and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "":
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "transformers"


def make_engine(config, load_fn=None) -> Engine:
    """The engine ``config.engine`` names (see :func:`choose_engine`). ``load_fn(config) ->
    LoadedModel`` replaces the transformers engine's loader (tests)."""
    kind = choose_engine(config.engine)
    if kind == "vllm":
        from codetune.serve.vllm_engine import VllmEngine

        return VllmEngine(config)
    from codetune.serve.continuous import TransformersEngine

    return TransformersEngine(config, load_fn=load_fn)
