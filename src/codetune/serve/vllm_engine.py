"""The vLLM engine: vLLM's ``AsyncLLM`` in the server process, behind codetune's front.

``AsyncLLM`` already runs the scheduler and the model in its own engine-core process (and its
tensor-parallel workers), so in-process use gives the same process layout as ``vllm serve``
minus a second HTTP server: codetune's front hands it token ids, a ``LoRARequest`` for the
resolved adapter and ``SamplingParams``, and relays its per-token deltas. Routing stays with
the front — vLLM's own ``/invocations`` answers with the base model when the adapter is
named in the body or unknown, so none of vLLM's HTTP routes is exposed. Measurements behind the
choice: benchmarks/RESULTS.md, "Serving engines".

Engine settings come from :mod:`codetune.serve.vllm_args` (derived, overridable).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.serve.engine import Delta, Engine, QueueFull, Sampling, Stream

log = logging.getLogger(__name__)


class VllmEngine(Engine):
    kind = "vllm"

    def __init__(self, config):
        self.config = config
        self.llm = None
        self._adapters: dict[str, tuple[int, str]] = {}  # name -> (lora id, dir)
        self._initial: dict[str, str] = {}
        self._named_bases: set[str] = set()
        self._ids = itertools.count(1)  # vLLM caches adapters by id: never reuse one
        self._running: dict[Stream, asyncio.Task] = {}
        self.args: dict = {}
        self.max_lora_rank = 0

    def load(self) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from codetune.generation import _resolve_base, adapter_base
        from codetune.serve import vllm_args
        from codetune.serve.loading import resolve_sources

        cfg = self.config
        base, adapters = resolve_sources(cfg)
        for name, d in adapters.items():
            if not (Path(d) / "adapter_config.json").is_file():
                raise CodetuneError(f"adapter {name!r}: {d} has no adapter_config.json")
            named = adapter_base(d)
            if named:
                self._named_bases.add(named)
        # the same base the transformers engine would load (explicit, the adapter's, embedded)
        self.base_path = _resolve_base(base, adapters)
        facts = None
        if Path(self.base_path).is_dir():
            facts = vllm_args.model_facts(self.base_path)
        gpus = vllm_args.detect_gpus() or vllm_args.gpus_for_instance(cfg.instance_type)
        ranks = [vllm_args.adapter_rank(d) for d in adapters.values()]
        self.args = vllm_args.engine_args(cfg, facts, ranks, gpus)
        self.max_lora_rank = self.args["max_lora_rank"]
        log.info("vllm engine args for %s on %s: %s", self.base_path, gpus, self.args)
        t0 = time.perf_counter()
        self.llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=self.base_path, **self.args))
        log.info("vllm engine up in %.1fs", time.perf_counter() - t0)
        self.context_window = self.llm.model_config.max_model_len
        self._tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        self._initial = adapters

    async def warm_up(self) -> None:
        for name, d in self._initial.items():
            await self.add_adapter(name, d)
        if self.config.warmup:
            await self._warm_generations()

    def adapters(self) -> dict[str, str]:
        return {n: d for n, (_, d) in self._adapters.items()}

    def submit(self, prompt_ids: list[int], adapter: str | None, sampling: Sampling) -> Stream:
        if adapter is not None and adapter not in self._adapters:
            known = ", ".join(["base", *sorted(self._adapters)])
            raise CodetuneError(f"unknown adapter {adapter!r}; known: {known}")
        # vLLM queues without bound; codetune's limit: what it decodes plus queue_size.
        limit = self.args["max_num_seqs"] + self.config.queue_size
        if len(self._running) >= limit:
            raise QueueFull(f"{len(self._running)} requests are already in the engine")
        stream = Stream(prompt_tokens=len(prompt_ids), adapter=adapter)
        task = asyncio.get_running_loop().create_task(
            self._drive(stream, prompt_ids, adapter, sampling)
        )
        self._running[stream] = task
        stream.on_cancel = task.cancel  # aborts the request inside vLLM
        return stream

    async def _drive(self, stream: Stream, ids: list[int], adapter: str | None, s: Sampling):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            stop=list(s.stop) or None,
            seed=s.seed,
            skip_special_tokens=True,
            output_kind=RequestOutputKind.DELTA,
        )
        lora = None
        if adapter is not None:
            lora_id, d = self._adapters[adapter]
            lora = LoRARequest(adapter, lora_id, d)
        eos = self._tokenizer.eos_token_id
        n = 0
        try:
            gen = self.llm.generate(
                TokensPrompt(prompt_token_ids=ids), params, uuid.uuid4().hex, lora_request=lora
            )
            async for out in gen:
                if stream.admitted is None:
                    stream.first_token = time.perf_counter()
                    stream.admitted = self._admitted(stream, out)
                    stream.batch_size = len(self._running)
                c = out.outputs[0]
                n += len(c.token_ids)
                if out.finished:
                    if c.token_ids and c.token_ids[-1] == eos:
                        n -= 1  # codetune counts answer tokens without the EOS
                    reason = "length" if c.finish_reason == "length" else "stop"
                    stream.push(Delta(c.text, reason, completion_tokens=n))
                elif c.text:
                    stream.push(Delta(c.text))
        except asyncio.CancelledError:
            if not stream.cancelled:  # the adapter was removed under it
                stream.fail(CodetuneError(f"adapter {adapter!r} was removed while this ran"))
        except Exception as e:
            log.exception("vllm generation failed")
            stream.fail(e)
        finally:
            self._running.pop(stream, None)

    @staticmethod
    def _admitted(stream: Stream, out) -> float:
        """When vLLM scheduled the request (its engine-core stats), else now."""
        m = out.metrics
        if m is not None and m.scheduled_ts and m.queued_ts:
            return stream.enqueued + max(0.0, m.scheduled_ts - m.queued_ts)
        return time.perf_counter()

    async def add_adapter(self, name: str, local_dir: str) -> None:
        from vllm.lora.request import LoRARequest

        from codetune.serve.vllm_args import adapter_rank

        if not (Path(local_dir) / "adapter_config.json").is_file():
            raise CodetuneError(f"adapter {name!r}: {local_dir} has no adapter_config.json")
        rank = adapter_rank(local_dir)
        if rank > self.max_lora_rank:
            raise CodetuneError(
                f"adapter {name!r} has LoRA rank {rank}, above this server's max_lora_rank "
                f"{self.max_lora_rank}; restart the server with CODETUNE_VLLM_MAX_LORA_RANK >= "
                f"{rank}"
            )
        req = LoRARequest(name, next(self._ids), local_dir)
        try:
            await self.llm.add_lora(req)
        except Exception as e:
            raise CodetuneError(
                f"vLLM could not load adapter {name!r} from {local_dir}: {e}"
            ) from e
        self._adapters[name] = (req.lora_int_id, local_dir)

    async def remove_adapter(self, name: str) -> None:
        lora_id, _ = self._adapters.pop(name)
        for stream, task in list(self._running.items()):
            if stream.adapter == name:
                task.cancel()
        await self.llm.remove_lora(lora_id)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()

    def stats(self) -> dict:
        return {"running": len(self._running), "args": self.args}
