"""Dynamic batching on ONE generation worker thread.

Generation is not thread-safe (``codetune.generation``), and one batch of 16 rows costs
little more than one row on a GPU (about 4x one row on the 2-core dev CPU, for 16x the
output), so concurrent requests are queued and the worker runs them together:

- the worker takes the oldest request, then collects requests with the same sampling
  settings (max_new_tokens, temperature, top_p, stop, seed; rows may use different adapters)
  until none has arrived for ``max_wait_s`` (at most ``MAX_WAIT_FACTOR`` x ``max_wait_s`` in
  all) or ``max_batch_size`` rows are taken;
- the queue is bounded: :meth:`Batcher.submit` raises :class:`QueueFull` at once when
  ``queue_size`` requests are waiting, so memory never grows with load;
- a request whose caller gave up (timeout) is dropped before it is generated;
- adapter registration and removal run on the same thread, between batches (:meth:`call`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from codetune.errors import CodetuneError

log = logging.getLogger(__name__)

MAX_WAIT_FACTOR = 5  # longest batch-collection window, in units of max_wait


class QueueFull(Exception):
    """The bounded queue is full; the caller should answer 503 with Retry-After."""


@dataclass(frozen=True)
class SamplingKey:
    """Settings one batch shares."""

    max_new_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None


@dataclass
class Job:
    """One prompt waiting for generation; ``future`` gets a ``Generation``."""

    prompt: str
    adapter: str | None
    key: SamplingKey
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None
    batch_size: int = 0


class Batcher:
    """Owns the generation worker thread. ``generate_fn(prompts, adapters, key)`` returns one
    result per prompt; ``known_adapters()`` is checked right before each batch so a row whose
    adapter was removed fails alone instead of failing its whole batch."""

    def __init__(
        self,
        generate_fn: Callable,
        known_adapters: Callable[[], set[str]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        queue_size: int,
        on_start: Callable[[], None] | None = None,
    ):
        self._generate = generate_fn
        self._known = known_adapters
        self._on_start = on_start  # per-thread setup (OpenMP thread counts are per thread)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self._jobs: collections.deque[Job] = collections.deque()
        self._calls: collections.deque[tuple[Callable, Future]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="codetune-generate", daemon=True)
        self.batches = 0  # counters for tests and the benchmark
        self.rows = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for job in list(self._jobs):
            job.future.cancel()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def submit(self, job: Job, *, force: bool = False) -> Job:
        """Queue ``job``; raises QueueFull when ``queue_size`` jobs wait (unless ``force``:
        the continuation of an already-admitted streaming request)."""
        with self._cond:
            if self._stopping:
                raise QueueFull("server is shutting down")
            if not force and len(self._jobs) >= self.queue_size:
                raise QueueFull(f"{len(self._jobs)} requests are already waiting")
            self._jobs.append(job)
            self._cond.notify_all()
        return job

    def call(self, fn: Callable[[], object]) -> Future:
        """Run ``fn`` on the worker thread between batches; returns its Future."""
        fut: Future = Future()
        with self._cond:
            self._calls.append((fn, fut))
            self._cond.notify_all()
        return fut

    # worker side -------------------------------------------------------------------------
    def _take_batch(self) -> list[Job] | None:
        """Block until there is work; returns a batch (or None after a control call / stop)."""
        with self._cond:
            while not self._jobs and not self._calls and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            if self._calls:
                return None
            first = self._jobs.popleft()
            batch = [first]
            start = time.perf_counter()
            # The window restarts whenever the batch grows (requests of a burst arrive spread
            # out by HTTP parsing), but never stretches past MAX_WAIT_FACTOR x max_wait.
            hard_deadline = start + MAX_WAIT_FACTOR * self.max_wait_s
            deadline = start + self.max_wait_s
            while len(batch) < self.max_batch_size:
                grew = False
                for j in list(self._jobs):
                    if j.key == first.key and len(batch) < self.max_batch_size:
                        self._jobs.remove(j)
                        batch.append(j)
                        grew = True
                now = time.perf_counter()
                if grew:
                    deadline = min(hard_deadline, now + self.max_wait_s)
                remaining = deadline - now
                if len(batch) >= self.max_batch_size or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            return batch

    def _run_calls(self) -> None:
        while True:
            with self._cond:
                if not self._calls:
                    return
                fn, fut = self._calls.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # delivered to the awaiting request
                fut.set_exception(e)

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            self._run_calls()
            batch = self._take_batch()
            if batch is None:
                if self._stopping:
                    return
                continue
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            known = self._known()
            rows = []
            for j in live:
                if j.adapter is not None and j.adapter not in known:
                    j.future.set_exception(
                        CodetuneError(
                            f"unknown adapter {j.adapter!r}; known: "
                            f"{', '.join(['base', *sorted(known)])}"
                        )
                    )
                else:
                    rows.append(j)
            if not rows:
                continue
            t0 = time.perf_counter()
            for j in rows:
                j.started = t0
                j.batch_size = len(rows)
            try:
                results = self._generate(
                    [j.prompt for j in rows], [j.adapter for j in rows], rows[0].key
                )
            except BaseException as e:
                log.exception("generation failed for a batch of %d", len(rows))
                for j in rows:
                    j.finished = time.perf_counter()
                    j.future.set_exception(e)
                continue
            self.batches += 1
            self.rows += len(rows)
            t1 = time.perf_counter()
            for j, r in zip(rows, results, strict=True):
                j.finished = t1
                j.future.set_result(r)
