"""The transformers engine: continuous batching with per-token streaming on one worker thread.

Generation is not thread-safe, so one thread owns the model and runs a loop of steps:

- **admission**: requests waiting when a step ends join the running batch at once (up to
  ``max_batch_size`` rows): their prompts are prefilled together and their first token is
  sampled in that same forward and pushed before the rows are merged into the batch's cache,
  so a stream's first token leaves one forward (its prefill) after admission; while it runs,
  the running rows wait (a prefill costs about one decoding step on a CPU: both read every
  weight once);
- **decoding**: one forward for every running row (rows may use different adapters —
  PEFT's mixed-adapter batch — and different sampling settings), then each row's new token is
  detokenized incrementally; the step's new texts reach their streams with one wake-up of the
  event loop;
- **retirement**: a row that hit EOS, a stop sequence or its ``max_new_tokens``, or whose
  client went away, leaves the batch (and the KV cache) at the end of that step;
- adapter registration and removal run between steps.

The KV cache is the evaluation engine's (``codetune.generation``): in-place growing slabs,
new rows merged by left-padding, rows dropped by index, dead left padding trimmed. No prompt is
ever prefilled twice: a stream is the same row from its first token to its last.

The queue of requests not yet admitted is bounded (``queue_size``): beyond it
:meth:`TransformersEngine.submit` raises QueueFull at once, so memory never grows with load.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from codetune.errors import CodetuneError
from codetune.serve.engine import Delta, Engine, QueueFull, Sampling, Stream

log = logging.getLogger(__name__)


class _Row:
    """One request inside the engine: its tokens so far and its incremental detokenizer
    (TGI's prefix/read offsets: decoding a few tokens of left context keeps SentencePiece
    spaces and multi-byte characters right without re-decoding the whole answer)."""

    def __init__(self, ids: list[int], adapter: str | None, sampling: Sampling, stream: Stream):
        self.ids = ids
        self.adapter = adapter
        self.sampling = sampling
        self.stream = stream
        self.toks: list[int] = []
        self.text = ""  # detokenized so far (may extend past what was sent)
        self.sent = 0  # characters of text pushed to the stream
        self.prefix_offset = 0
        self.read_offset = 0
        self.gen = None  # a torch.Generator when the request gave a seed
        self.finish: str | None = None
        self.holdback = max((len(s) for s in sampling.stop), default=1) - 1


def _stop_prefix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the beginning of a stop sequence."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


DEFAULT_MAX_BATCH = 16  # rows decoded together when max_batch_size is 0


class TransformersEngine(Engine):
    kind = "transformers"

    def __init__(self, config, load_fn: Callable | None = None):
        from codetune.serve.app import default_load

        self.config = config
        self.max_batch = config.max_batch_size or DEFAULT_MAX_BATCH
        self._load_fn = load_fn or default_load
        self.lm = None
        self._pending: collections.deque[_Row] = collections.deque()
        self._calls: collections.deque[tuple[Callable, Future]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # running batch (worker thread only)
        self._active: list[_Row] = []
        self._cache = self._mask = self._pos = self._last = None
        self._peft_mode: str | None = None  # "off" | adapter name | "mixed"; None = unknown
        self._counters = {"steps": 0, "prefills": 0, "rows": 0, "max_active": 0}

    # ---------------------------------------------------------------- front side
    def load(self) -> None:
        from transformers import AutoTokenizer

        from codetune import generation

        self._set_threads()
        lm = self._load_fn(self.config)
        self.lm = lm
        self.base_path = lm.base_path
        self.context_window = lm.context_window
        self._tokenizer = AutoTokenizer.from_pretrained(lm.base_path)  # worker: lm.tokenizer
        self._named_bases = set()
        for d in lm.adapters.values():
            named = generation.adapter_base(d)
            if named:
                self._named_bases.add(named)
        self._thread = threading.Thread(target=self._run, name="codetune-generate", daemon=True)
        self._thread.start()

    async def warm_up(self) -> None:
        if self.config.warmup:  # adapters were attached by load()
            await self._warm_generations()

    def adapters(self) -> dict[str, str]:
        return dict(self.lm.adapters) if self.lm is not None else {}

    def submit(self, prompt_ids: list[int], adapter: str | None, sampling: Sampling) -> Stream:
        if adapter is not None and adapter not in self.lm.adapters:
            raise CodetuneError(self._unknown(adapter))
        stream = Stream(prompt_tokens=len(prompt_ids), adapter=adapter)
        row = _Row(list(prompt_ids), adapter, sampling, stream)
        with self._cond:
            if self._stopping:
                raise QueueFull("server is shutting down")
            if len(self._pending) >= self.config.queue_size:
                raise QueueFull(f"{len(self._pending)} requests are already waiting")
            self._pending.append(row)
            self._cond.notify_all()
        return stream

    async def add_adapter(self, name: str, local_dir: str) -> None:
        from codetune import generation

        def add() -> None:
            generation.add_adapter(self.lm, name, local_dir)
            self._peft_mode = None  # new LoRA layers start enabled: re-apply the state

        await asyncio.wrap_future(self._call(add))

    async def remove_adapter(self, name: str) -> None:
        await asyncio.wrap_future(self._call(lambda: self._remove_adapter(name)))

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(10)

    def stats(self) -> dict:
        return {**self._counters, "active": len(self._active), "waiting": len(self._pending)}

    def _unknown(self, name: str) -> str:
        known = ", ".join(["base", *sorted(self.lm.adapters)])
        return f"unknown adapter {name!r}; known: {known}"

    def _call(self, fn: Callable[[], object]) -> Future:
        """Run ``fn`` on the worker thread between steps; returns its Future."""
        fut: Future = Future()
        with self._cond:
            self._calls.append((fn, fut))
            self._cond.notify_all()
        return fut

    def _set_threads(self) -> None:
        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)

    # ---------------------------------------------------------------- worker side
    def _run(self) -> None:
        import torch

        self._set_threads()  # OpenMP thread counts are per thread
        try:
            while True:
                with self._cond:
                    while not (self._pending or self._calls or self._active or self._stopping):
                        self._cond.wait()
                    if self._stopping:
                        break
                    calls = list(self._calls)
                    self._calls.clear()
                    free = self.max_batch - len(self._active)
                    new = []
                    while self._pending and len(new) < free:
                        row = self._pending.popleft()
                        if not row.stream.cancelled:
                            new.append(row)
                for fn, fut in calls:
                    if fut.set_running_or_notify_cancel():
                        try:
                            fut.set_result(fn())
                        except BaseException as e:  # delivered to the awaiting request
                            fut.set_exception(e)
                try:
                    with torch.inference_mode():  # no autograd records: base weights require grad
                        if new:
                            self._admit(new)
                        elif self._active:
                            self._step()
                except Exception as e:
                    log.exception("generation step failed for %d rows", len(self._active))
                    self._drop(lambda r: True, e)
                    for row in new:
                        if row.stream.finished is None:
                            row.stream.fail(e)
        finally:
            error = QueueFull("server is shutting down")
            self._drop(lambda r: True, error)
            with self._cond:
                for row in self._pending:
                    row.stream.fail(error)
                self._pending.clear()

    def _forward(self, input_ids, attn, positions, cache, rows: list[_Row]):
        """One model forward with the rows' adapters: PEFT's plain path when every row uses
        the same adapter (or none), its mixed-adapter path otherwise."""
        dev = self.lm.device
        out = self.lm.model(
            input_ids=input_ids.to(dev),
            attention_mask=attn.to(dev),
            position_ids=positions.to(dev),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._route(rows),
        )
        return out.logits[:, -1, :]

    def _route(self, rows: list[_Row]) -> dict:
        """Put PEFT in the state these rows need and return the forward's extra arguments.
        The state persists between steps and changes only when the batch's adapters do:
        PEFT's ``disable_adapter()`` context costs several decoding steps' worth of module
        walks on this model (63 ms against a ~30 ms step on 2 cores), far too much per step."""
        from peft import PeftModel

        from codetune.generation import BASE

        model = self.lm.model
        if not isinstance(model, PeftModel):
            return {}
        names = {r.adapter for r in rows}
        want = "off" if names == {None} else next(iter(names)) if len(names) == 1 else "mixed"
        if want != self._peft_mode:
            if want == "off":
                model.base_model.disable_adapter_layers()
            else:
                if self._peft_mode in ("off", None):
                    model.base_model.enable_adapter_layers()
                if want != "mixed" and model.active_adapter != want:
                    model.set_adapter(want)
            self._peft_mode = want
        if want == "mixed":
            return {"adapter_names": [r.adapter or BASE for r in rows]}
        return {}

    def _pick(self, logits, rows: list[_Row]):
        """One token per row: argmax for greedy rows, each sampled row with its own settings
        and generator (a seeded request draws the same tokens whatever else is batched)."""
        from codetune.generation import _pick_tokens

        toks = logits.argmax(-1)
        for r, row in enumerate(rows):
            s = row.sampling
            if s.temperature > 0:
                toks[r] = _pick_tokens(logits[r : r + 1], s.temperature, s.top_p, row.gen)[0]
        return toks.cpu()

    def _admit(self, new: list[_Row]) -> None:
        """Prefill the new rows together and sample their first tokens; push those tokens as
        soon as the logits exist, then merge the rows into the running batch's cache."""
        import torch
        import torch.nn.functional as F

        from codetune.generation import _merge_caches, _slab_cache

        pad = self.lm.tokenizer.pad_token_id
        if pad is None:
            pad = self.lm.tokenizer.eos_token_id
        width = max(len(r.ids) for r in new)
        inp = torch.full((len(new), width), pad, dtype=torch.long)
        m_new = torch.zeros((len(new), width), dtype=torch.long)
        now = time.perf_counter()
        for i, row in enumerate(new):
            inp[i, width - len(row.ids) :] = torch.tensor(row.ids)
            m_new[i, width - len(row.ids) :] = 1
            if row.sampling.seed is not None:
                row.gen = torch.Generator().manual_seed(row.sampling.seed)
            row.stream.admitted = now
            row.stream.batch_size = len(self._active) + len(new)
        p_new = (m_new.cumsum(-1) - 1).clamp(min=0)
        c_new = _slab_cache(self.lm.model.config.num_hidden_layers)
        first = self._pick(self._forward(inp, m_new, p_new, c_new, new), new)
        done = time.perf_counter()
        for row in new:
            row.stream.first_token, row.stream.prefill_s = done, done - now
        self._push([int(t) for t in first], new)  # before the merge: the client waits on it
        if self._cache is None:
            self._cache, self._mask = c_new, m_new
            self._pos, self._last = m_new.sum(-1), first
        else:
            t_old = self._mask.shape[1]
            self._cache = _merge_caches(self._cache, c_new, t_old, width)
            total = max(t_old, width)
            self._mask = torch.cat(
                [F.pad(self._mask, (total - t_old, 0)), F.pad(m_new, (total - width, 0))]
            )
            self._pos = torch.cat([self._pos, m_new.sum(-1)])
            self._last = torch.cat([self._last, first])
        self._active += new
        self._counters["prefills"] += 1
        self._counters["rows"] += len(new)
        self._counters["max_active"] = max(self._counters["max_active"], len(self._active))
        self._retire()

    def _step(self) -> None:
        """One decoding step for every running row."""
        import torch

        rows = self._active
        self._mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        logits = self._forward(
            self._last[:, None], self._mask, self._pos[:, None], self._cache, rows
        )
        self._last = self._pick(logits, rows)
        self._pos = self._pos + 1
        self._counters["steps"] += 1
        self._emit([int(t) for t in self._last], rows)

    def _emit(self, toks: list[int], rows: list[_Row]) -> None:
        """Append each row's new token, push its new text, then retire finished rows."""
        self._push(toks, rows)
        self._retire()

    def _push(self, toks: list[int], rows: list[_Row]) -> None:
        """Advance every row by its token; the new texts go out with one event-loop wake-up."""
        out = []
        for tok, row in zip(toks, rows, strict=True):
            delta = self._advance(row, tok)
            if delta is not None:
                out.append((row.stream, delta))
        Stream.push_many(out)

    def _retire(self) -> None:
        self._drop(lambda r: r.stream.cancelled or r.finish is not None, None)

    def _advance(self, row: _Row, tok: int) -> Delta | None:
        """Add one token to ``row``; returns the text that is now final as a Delta (None when
        there is none yet), the last one with the finish reason when the row is done. Only
        an end of the text that could still grow into a stop sequence is held back, until it
        cannot (stop sequences never reach the client; the rest goes out at once)."""
        tk = self.lm.tokenizer
        stop = row.sampling.stop
        finish = None
        if tok == tk.eos_token_id:
            finish = "stop"
        else:
            row.toks.append(tok)
            self._detokenize(row)
            if stop:
                # A stop sequence can only start in the held-back part or the new text.
                start = max(0, row.sent - row.holdback)
                hits = [i for i in (row.text.find(x, start) for x in stop) if i >= 0]
                if hits:
                    row.text = row.text[: min(hits)]
                    finish = "stop"
            if finish is None and len(row.toks) >= row.sampling.max_new_tokens:
                finish = "length"
        if finish is not None and not (stop and finish == "stop" and tok != tk.eos_token_id):
            self._detokenize(row, final=True)
        row.finish = finish
        end = len(row.text) - (0 if finish is not None else _stop_prefix(row.text, stop))
        piece = row.text[row.sent : end] if end > row.sent else ""
        row.sent = max(row.sent, end)
        if finish is not None:
            return Delta(piece, finish, completion_tokens=len(row.toks))
        return Delta(piece) if piece else None

    def _detokenize(self, row: _Row, final: bool = False) -> None:
        """Extend ``row.text`` with what the new tokens spell; an incomplete multi-byte
        character waits for its next token unless ``final``."""
        tk = self.lm.tokenizer
        prefix = tk.decode(row.toks[row.prefix_offset : row.read_offset], skip_special_tokens=True)
        full = tk.decode(row.toks[row.prefix_offset :], skip_special_tokens=True)
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            row.text += full[len(prefix) :]
            row.prefix_offset, row.read_offset = row.read_offset, len(row.toks)

    def _drop(self, pred: Callable[[_Row], bool], error: BaseException | None) -> None:
        """Remove the running rows ``pred`` selects from the batch (failing their streams
        with ``error`` when given) and trim the cache to the rows that remain."""
        import torch

        gone = [r for r, row in enumerate(self._active) if pred(row)]
        if not gone:
            return
        if error is not None:
            for r in gone:
                self._active[r].stream.fail(error)
        keep = [r for r in range(len(self._active)) if r not in set(gone)]
        self._active = [self._active[r] for r in keep]
        if not self._active:
            self._cache = self._mask = self._pos = self._last = None
            return
        idx = torch.tensor(keep)
        for layer in self._cache.layers:
            layer.select_rows(idx.to(self.lm.device))
        self._mask, self._pos, self._last = self._mask[idx], self._pos[idx], self._last[idx]
        lead = int((self._mask.sum(0) == 0).long().cumprod(0).sum())
        if lead:  # left padding no remaining row needs
            for layer in self._cache.layers:
                layer.drop_left(lead)
            self._mask = self._mask[:, lead:]

    def _remove_adapter(self, name: str) -> None:
        import torch

        from codetune import generation

        err = CodetuneError(f"adapter {name!r} was removed while this request was running")
        with torch.inference_mode():  # the cache holds inference tensors
            self._drop(lambda r: r.adapter == name, err)
        with self._cond:
            for row in [r for r in self._pending if r.adapter == name]:
                self._pending.remove(row)
                row.stream.fail(err)
        generation.remove_adapter(self.lm, name)
        self._peft_mode = None
