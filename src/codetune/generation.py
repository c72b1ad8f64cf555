"""Loading a base model with LoRA adapters, and batched generation. Evaluation and serving
both use this module, so "what the model answers" is computed the same way everywhere.

- One base model in memory; any number of LoRA adapters attached by name (PEFT).
- A batch may mix adapters and the base model (PEFT's ``adapter_names`` mixed-batch
  inference); ``None`` or :data:`BASE` selects the base model with every adapter disabled.
- Stop sequences end a row early (``stop_strings``) and are cut from the text.
- Prompts are left-padded to a multiple of :data:`PAD_MULTIPLE` tokens: fewer distinct tensor
  shapes keeps glibc from hoarding freed memory (see benchmarks/RESULTS.md).

Not thread-safe: callers serialize :func:`generate` calls (the server's batcher does).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.model import resolve_base_model

log = logging.getLogger(__name__)

BASE = "__base__"  # PEFT's name for "no adapter" in mixed batches
PAD_MULTIPLE = 32


@dataclass
class LoadedModel:
    """A base model (possibly wrapped by PEFT) with its tokenizer and attached adapters."""

    model: object
    tokenizer: object
    base_path: str
    adapters: dict[str, str] = field(default_factory=dict)  # name -> directory
    context_window: int = 2048

    @property
    def device(self):
        return next(self.model.parameters()).device


@dataclass
class Generation:
    """One generated answer."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or stop sequence) | "length"
    adapter: str | None
    seconds: float


def adapter_base(adapter_dir: str | Path) -> str | None:
    """The base model named in an adapter's ``adapter_config.json`` (None if absent)."""
    cfg = Path(adapter_dir) / "adapter_config.json"
    if not cfg.is_file():
        raise CodetuneError(f"{adapter_dir} is not a LoRA adapter: no adapter_config.json")
    return json.loads(cfg.read_text()).get("base_model_name_or_path")


def _resolve_base(base_model: str | None, adapters: dict[str, str]) -> str:
    """The explicit base model, else the one the first adapter names, else the embedded one.

    An adapter naming a local base model that does not exist here is an error, never a
    silent switch to another model."""
    if base_model:
        return resolve_base_model(base_model)
    for d in adapters.values():
        named = adapter_base(d)
        if named:
            return resolve_base_model(named)
    return resolve_base_model(None)


def load_model(
    base_model: str | None = None,
    adapters: dict[str, str | Path] | None = None,
    *,
    quantization: str = "none",
    device: str | None = None,
) -> LoadedModel:
    """Load the base model (``None`` = embedded, or the base the adapter names) and attach
    ``adapters`` (name -> dir). ``quantization`` is ``none`` or ``4bit`` (NF4, bitsandbytes).

    Raises CodetuneError for a missing adapter directory or an unknown quantization.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapters = {k: str(v) for k, v in (adapters or {}).items()}
    for name, d in adapters.items():
        if not (Path(d) / "adapter_config.json").is_file():
            raise CodetuneError(f"adapter {name!r}: {d} has no adapter_config.json")
        if name == BASE:
            raise CodetuneError(f"adapter name {BASE!r} is reserved for the base model")
    if quantization not in ("none", "4bit"):
        raise CodetuneError(f"quantization must be 'none' or '4bit', got {quantization!r}")
    base_path = _resolve_base(base_model, adapters)
    cuda = torch.cuda.is_available() and device != "cpu"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    kwargs: dict = {"dtype": dtype}
    if quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(base_path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
    if cuda and quantization == "none":
        model = model.to("cuda")
    if adapters:
        from peft import PeftModel

        names = list(adapters)
        model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
        for name in names[1:]:
            model.load_adapter(adapters[name], adapter_name=name)
    model.eval()
    ctx = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    log.info(
        "loaded %s with adapters %s in %.1fs", base_path, list(adapters), time.perf_counter() - t0
    )
    return LoadedModel(
        model=model, tokenizer=tok, base_path=base_path, adapters=adapters, context_window=ctx
    )


def add_adapter(lm: LoadedModel, name: str, adapter_dir: str | Path) -> None:
    """Attach another adapter at run time (shares the base weights)."""
    from peft import PeftModel

    if name == BASE or name in lm.adapters:
        raise CodetuneError(f"adapter name {name!r} is already in use")
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise CodetuneError(f"adapter {name!r}: {adapter_dir} has no adapter_config.json")
    if isinstance(lm.model, PeftModel):
        lm.model.load_adapter(str(adapter_dir), adapter_name=name)
    else:
        lm.model = PeftModel.from_pretrained(lm.model, str(adapter_dir), adapter_name=name)
        lm.model.eval()
    lm.adapters[name] = str(adapter_dir)


def remove_adapter(lm: LoadedModel, name: str) -> None:
    """Detach an adapter; raises CodetuneError for an unknown name."""
    if name not in lm.adapters:
        raise CodetuneError(
            f"unknown adapter {name!r}; known: {', '.join(sorted(lm.adapters)) or 'none'}"
        )
    lm.model.delete_adapter(name)
    del lm.adapters[name]


def chat_prompt(lm: LoadedModel, msgs: list[dict]) -> str:
    """Render chat messages with the model's template (generation prompt appended)."""
    from codetune.prompts import render_chat

    return render_chat(lm.tokenizer, msgs, add_generation_prompt=True)


def _row_adapters(lm: LoadedModel, adapters, n: int) -> list[str]:
    """One adapter name per row (:data:`BASE` for the base model); raises CodetuneError for
    an unknown name — never a silent fallback to the base model."""
    rows = adapters if isinstance(adapters, list) else [adapters] * n
    if len(rows) != n:
        raise ValueError("adapters must have one entry per prompt")
    names = [BASE if a in (None, BASE) else a for a in rows]
    unknown = sorted({x for x in names if x != BASE and x not in lm.adapters})
    if unknown:
        raise CodetuneError(
            f"unknown adapter(s) {', '.join(unknown)}; known: {', '.join([BASE, *sorted(lm.adapters)])}"
        )
    return names


def generate(
    lm: LoadedModel,
    prompts: list[str],
    *,
    adapters: list[str | None] | str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    seed: int | None = None,
) -> list[Generation]:
    """Generate one answer per prompt in a single batch.

    ``adapters``: one name for all rows, or a list with one entry per prompt; ``None`` or
    ``BASE`` means the base model. Greedy when ``temperature == 0``. Raises CodetuneError for
    an unknown adapter name (never falls back to the base model).
    """
    import torch

    if not prompts:
        return []
    names = _row_adapters(lm, adapters, len(prompts))
    tok = lm.tokenizer
    enc = tok(
        prompts,
        return_tensors="pt",
        padding=True,
        pad_to_multiple_of=PAD_MULTIPLE,
        add_special_tokens=False,
    )
    enc = {k: v.to(lm.device) for k, v in enc.items()}
    gen_kwargs: dict = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        if seed is not None:
            torch.manual_seed(seed)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop:
        gen_kwargs.update(stop_strings=list(stop), tokenizer=tok)
    from peft import PeftModel

    t0 = time.perf_counter()
    with torch.inference_mode():
        if isinstance(lm.model, PeftModel):
            if set(names) == {BASE}:
                with lm.model.disable_adapter():
                    out = lm.model.generate(**enc, **gen_kwargs)
            elif len(set(names)) == 1:
                lm.model.set_adapter(names[0])
                out = lm.model.generate(**enc, **gen_kwargs)
            else:
                out = lm.model.generate(**enc, adapter_names=names, **gen_kwargs)
        else:
            if set(names) != {BASE}:
                raise CodetuneError("no adapters are loaded; only the base model can answer")
            out = lm.model.generate(**enc, **gen_kwargs)
    seconds = time.perf_counter() - t0
    prompt_len = enc["input_ids"].shape[1]
    results = []
    for i in range(len(prompts)):
        new = out[i, prompt_len:].tolist()
        finish = "length"
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
            finish = "stop"
        while new and new[-1] == tok.pad_token_id:
            new.pop()
        text = tok.decode(new, skip_special_tokens=True)
        for s in stop or []:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
                finish = "stop"
        results.append(
            Generation(
                text=text,
                prompt_tokens=int(enc["attention_mask"][i].sum()),
                completion_tokens=len(new),
                finish_reason=finish,
                adapter=None if names[i] == BASE else names[i],
                seconds=seconds,
            )
        )
    return results


# ---------------------------------------------------------------- continuous batching


class _SlabLayerMixin:
    """KV-cache layer storage that grows in place (amortized doubling) instead of
    ``torch.cat``-ing the whole cache on every decoding step as ``DynamicLayer`` does: at
    600 cached tokens x 32 rows that copy was ~20% of a CPU decoding step
    (benchmarks/RESULTS.md). ``keys``/``values`` are views of the first ``n`` positions."""

    def _init_slab(self, k):
        self.dtype, self.device = k.dtype, k.device
        self.kb = self.vb = None
        self.n = 0
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        import torch

        if not self.is_initialized:
            self._init_slab(key_states)
        need = self.n + key_states.shape[-2]
        if self.kb is None or need > self.kb.shape[-2] or self.kb.shape[0] != key_states.shape[0]:
            cap = max(need + 64, 2 * self.n)
            shape = (*key_states.shape[:2], cap, key_states.shape[-1])
            kb = key_states.new_empty(shape)
            vb = torch.empty_like(kb)
            if self.n:
                kb[..., : self.n, :] = self.kb[..., : self.n, :]
                vb[..., : self.n, :] = self.vb[..., : self.n, :]
            self.kb, self.vb = kb, vb
        self.kb[..., self.n : need, :] = key_states
        self.vb[..., self.n : need, :] = value_states
        self.n = need
        self.keys = self.kb[..., :need, :]
        self.values = self.vb[..., :need, :]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n if self.is_initialized else 0

    def select_rows(self, idx) -> None:
        self.kb, self.vb = self.kb[idx], self.vb[idx]
        self._views()

    def drop_left(self, k: int) -> None:
        """Forget the ``k`` oldest positions (left padding no remaining row attends to)."""
        self.kb, self.vb = self.kb[..., k:, :], self.vb[..., k:, :]
        self.n -= k
        self._views()

    def _views(self):
        self.keys = self.kb[..., : self.n, :]
        self.values = self.vb[..., : self.n, :]


def _slab_cache(n_layers: int):
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(_SlabLayerMixin, DynamicLayer):
        pass

    cache = DynamicCache()
    cache.layers = [SlabLayer() for _ in range(n_layers)]
    return cache


def _merge_caches(a, b, len_a: int, len_b: int):
    """Rows of cache ``b`` appended to cache ``a``; the shorter one is left-padded with zeros
    (masked out by the attention mask) to the longer one's length. Each layer is copied once,
    straight into its new slab. Returns ``a``."""
    total = max(len_a, len_b)
    for la, lb in zip(a.layers, b.layers, strict=True):
        rows_a = la.kb.shape[0]
        shape = (rows_a + lb.kb.shape[0], la.kb.shape[1], total + 64, la.kb.shape[-1])
        kb, vb = la.kb.new_empty(shape), la.vb.new_empty(shape)
        for dst, src_a, src_b in ((kb, la.kb, lb.kb), (vb, la.vb, lb.vb)):
            halves = ((slice(0, rows_a), src_a, len_a), (slice(rows_a, None), src_b, len_b))
            for rows, src, n in halves:
                if n < total:
                    dst[rows, :, : total - n].zero_()
                dst[rows, :, total - n : total] = src[..., :n, :]
        la.kb, la.vb, la.n = kb, vb, total
        la._views()
    return a


def _pick_tokens(logits, temperature: float, top_p: float, gen):
    import torch

    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p  # always keeps the most likely token
        sp = sp * keep
        choice = torch.multinomial(sp / sp.sum(-1, keepdim=True), 1, generator=gen)
        return si.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


DRAFT_NGRAM = 3  # longest tail of the answer looked up in the prompt


class _PromptLookup:
    """Drafts for one row copied from its prompt (prompt-lookup decoding).

    Every n-gram of the prompt (n = 1..``ngram``) is indexed once with the positions that
    follow it. A draft continues where the previous one left off while the answer keeps
    matching the prompt there (an answer that re-types a function stays on it). After a
    token that differs (the fix), the answer's tail of >= 2 tokens is looked up; failing
    that the copy skips the replaced token; failing that the last token is looked up. An
    occurrence at or after the current place is preferred to an earlier one.

    The draft's length adapts (up to ``k_max``): it doubles after a draft was accepted whole
    and halves after a miss, so a row whose answer has left the prompt stops making the
    whole batch verify long drafts it will reject."""

    def __init__(self, prompt: list[int], ngram: int, k_max: int = 8):
        self.prompt = prompt
        self.ngram = ngram
        self.k_max = self.k = k_max
        self.index: dict[tuple[int, ...], list[int]] = {}
        for n in range(1, ngram + 1):
            for j in range(len(prompt) - n):
                self.index.setdefault(tuple(prompt[j : j + n]), []).append(j + n)
        self.ptr = -1  # prompt position predicted to hold the answer's next token

    def draft(self, answer: list[int], room: int) -> list[int]:
        """Up to ``room`` prompt tokens predicted to follow ``answer`` (empty: no match)."""
        p, ptr, k = self.prompt, self.ptr, min(room, self.k)
        if k <= 0 or not answer:
            return []
        if not (0 < ptr < len(p) and p[ptr - 1] == answer[-1]):
            found = self._lookup(answer, 2)
            if found is None:
                found = ptr if 0 < ptr < len(p) else self._lookup(answer, 1)
            ptr = -1 if found is None else found
        self.ptr = ptr
        return p[ptr : ptr + k] if ptr >= 0 else []

    def advance(self, accepted: int, drafted: int = 0) -> None:
        """The answer grew by ``accepted`` of ``drafted`` draft tokens and one token of the
        model's."""
        if self.ptr >= 0:
            self.ptr += accepted + 1
        if drafted:
            full = accepted == drafted
            self.k = min(self.k_max, 2 * self.k) if full else max(1, self.k // 2)

    def _lookup(self, answer: list[int], min_n: int) -> int | None:
        import bisect

        for n in range(min(self.ngram, len(answer)), min_n - 1, -1):
            hits = self.index.get(tuple(answer[-n:]))
            if hits:
                i = bisect.bisect_left(hits, self.ptr)
                return hits[i] if i < len(hits) else hits[0]
        return None


def generate_continuous(
    lm: LoadedModel,
    prompts: list[str],
    *,
    adapters: list[str | None] | str | None = None,
    max_new_tokens: int | list[int] = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    seed: int | None = None,
    max_batch: int = 32,
    on_finish=None,
    draft_tokens: int = 0,
    draft_ngram: int = DRAFT_NGRAM,
    stats: dict | None = None,
) -> list[Generation]:
    """Generate one answer per prompt with continuous batching: at most ``max_batch`` rows
    decode together, a row leaves the batch the step it finishes (EOS, a stop sequence, or
    its own ``max_new_tokens``) and queued prompts take its place — no compute is spent on
    finished rows or on the longest row's length, which is what plain batched ``generate``
    does. Rows are admitted in the given order (put the longest expected answers first).

    Same arguments and results as :func:`generate`, plus a per-row ``max_new_tokens`` list
    and ``on_finish(index, Generation)`` called as each row completes. Greedy decoding gives
    the same tokens as :func:`generate` up to float rounding; sampled rows draw from one
    generator seeded by ``seed`` (reproducible for the same prompts, order and
    ``max_batch``). ``Generation.seconds`` is the row's time from admission to finish.

    ``draft_tokens > 0`` (greedy only) turns on prompt-lookup speculative decoding: each row
    proposes up to that many tokens copied from its own prompt (where the last
    ``draft_ngram``..1 generated tokens occur in it, :class:`_PromptLookup`), the model
    verifies every row's draft in one forward, a row keeps the longest prefix that matches
    its greedy tokens plus the model's next token, and the cache forgets the rest. Answers
    are the greedy answers without drafts; a bugfix answer, which re-types its prompt's
    function, needs far fewer forwards (benchmarks/RESULTS.md). ``stats`` (a dict), when
    given, receives the number of model ``forwards`` and the ``drafted`` and ``accepted``
    token counts.

    Raises ValueError for bad sizes or drafts with sampling.
    """
    import contextlib
    from collections import deque

    import torch

    n = len(prompts)
    if not n:
        return []
    caps = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * n
    if len(caps) != n:
        raise ValueError("max_new_tokens needs one entry per prompt")
    if min(caps) < 1 or max_batch < 1:
        raise ValueError("max_new_tokens and max_batch must be >= 1")
    if draft_tokens < 0 or draft_ngram < 1:
        raise ValueError("draft_tokens must be >= 0 and draft_ngram >= 1")
    if draft_tokens and temperature > 0:
        raise ValueError("prompt-lookup drafts verify greedy tokens: use temperature 0")
    names = _row_adapters(lm, adapters, n)
    from peft import PeftModel

    model, tok = lm.model, lm.tokenizer
    is_peft = isinstance(model, PeftModel)
    if not is_peft and set(names) != {BASE}:
        raise CodetuneError("no adapters are loaded; only the base model can answer")
    routing = contextlib.nullcontext()
    per_row_names = False
    if is_peft:
        if set(names) == {BASE}:
            routing = model.disable_adapter()
        elif len(set(names)) == 1:
            model.set_adapter(names[0])
        else:
            per_row_names = True  # PEFT mixed-adapter batch
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    stops = list(stop or [])
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    n_layers = model.config.num_hidden_layers
    dev = lm.device
    refill_at = max(1, max_batch // 4)  # admit in groups: a prefill of 1 row is inefficient

    queue = deque(range(n))
    results: list[Generation | None] = [None] * n
    active: list[int] = []
    out_tokens: dict[int, list[int]] = {}
    started: dict[int, float] = {}
    cache = None
    mask = pos = last = None
    lookups: dict[int, _PromptLookup] = {}
    counts = {"forwards": 0, "drafted": 0, "accepted": 0}

    def finished(i: int, toks: list[int]) -> str | None:
        if toks and toks[-1] == eos:
            return "stop"
        if stops:
            tail = tok.decode(toks[-16:], skip_special_tokens=True)
            if any(s in tail for s in stops):
                return "stop"
        if len(toks) >= caps[i]:
            return "length"
        return None

    def complete(i: int, why: str) -> None:
        toks = out_tokens.pop(i)
        if toks and toks[-1] == eos:
            toks = toks[:-1]
        text = tok.decode(toks, skip_special_tokens=True)
        for s in stops:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
                why = "stop"
        g = Generation(
            text=text,
            prompt_tokens=len(ids[i]),
            completion_tokens=len(toks),
            finish_reason=why,
            adapter=None if names[i] == BASE else names[i],
            seconds=time.perf_counter() - started.pop(i),
        )
        results[i] = g
        if on_finish is not None:
            on_finish(i, g)

    def forward(input_ids, attn, position_ids, past, row_names, keep=1):
        kw = {"adapter_names": row_names} if per_row_names else {}
        counts["forwards"] += 1
        return model(
            input_ids=input_ids,
            attention_mask=attn,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=True,
            logits_to_keep=keep,
            **kw,
        )

    def verify(drafts: list[list[int]]):
        """One forward over every row's last token + draft; each row keeps the draft's
        longest prefix that equals its greedy tokens, plus the model's next token. The
        cache keeps the positions some row accepted; a row's rejected ones are masked."""
        nonlocal mask, pos, last
        b, width = len(active), 1 + max(len(d) for d in drafts)
        inp = torch.full((b, width), pad, dtype=torch.long)
        inp[:, 0] = last
        step = torch.zeros((b, width), dtype=torch.long)
        for r, d in enumerate(drafts):
            inp[r, 1 : 1 + len(d)] = torch.tensor(d, dtype=torch.long)
            step[r, : 1 + len(d)] = 1
        positions = pos[:, None] + torch.arange(width)
        out = forward(
            inp.to(dev),
            torch.cat([mask, step], dim=1).to(dev),
            positions.to(dev),
            cache,
            [names[i] for i in active],
            keep=width,
        )
        greedy = out.logits.argmax(-1).cpu().tolist()
        kept = []
        for r, i in enumerate(active):
            d, g = drafts[r], greedy[r]
            m = 0
            while m < len(d) and d[m] == g[m]:
                m += 1
            for t in (*d[:m], g[m]):  # stop where plain decoding would have stopped
                out_tokens[i].append(t)
                if finished(i, out_tokens[i]):
                    break
            lookups[i].advance(m, len(d))
            kept.append(m + 1)
            counts["drafted"] += len(d)
            counts["accepted"] += m
        n_keep = max(kept)
        if n_keep < width:  # roll back what no row accepted
            for layer in cache.layers:
                layer.n -= width - n_keep
                layer._views()
        step = (torch.arange(n_keep)[None, :] < torch.tensor(kept)[:, None]).long()
        mask = torch.cat([mask, step], dim=1)
        pos = pos + torch.tensor(kept)
        last = torch.tensor([greedy[r][k - 1] for r, k in enumerate(kept)])

    with torch.inference_mode(), routing:
        while queue or active:
            # Admit queued rows when enough slots are free (or nothing is running).
            free = max_batch - len(active)
            if queue and (free >= refill_at or not active or len(queue) <= free):
                new = [queue.popleft() for _ in range(min(free, len(queue)))]
                width = max(len(ids[i]) for i in new)
                inp = torch.full((len(new), width), pad, dtype=torch.long)
                m_new = torch.zeros((len(new), width), dtype=torch.long)
                for r, i in enumerate(new):
                    inp[r, width - len(ids[i]) :] = torch.tensor(ids[i])
                    m_new[r, width - len(ids[i]) :] = 1
                    started[i] = time.perf_counter()
                p_new = (m_new.cumsum(-1) - 1).clamp(min=0)
                c_new = _slab_cache(n_layers)
                out = forward(
                    inp.to(dev), m_new.to(dev), p_new.to(dev), c_new, [names[i] for i in new]
                )
                first = _pick_tokens(out.logits[:, -1, :], temperature, top_p, gen).cpu()
                if cache is None:
                    cache, mask = c_new, m_new
                    pos, last = m_new.sum(-1), first
                else:
                    t_old = mask.shape[1]
                    cache = _merge_caches(cache, c_new, t_old, width)
                    total = max(t_old, width)
                    mask = torch.cat(
                        [
                            torch.nn.functional.pad(mask, (total - t_old, 0)),
                            torch.nn.functional.pad(m_new, (total - width, 0)),
                        ]
                    )
                    pos = torch.cat([pos, m_new.sum(-1)])
                    last = torch.cat([last, first])
                active += new
                for r, i in enumerate(new):
                    out_tokens[i] = [int(first[r])]
                    if draft_tokens:
                        lookups[i] = _PromptLookup(ids[i], draft_ngram, draft_tokens)
            elif lookups and any(
                drafts := [
                    lookups[i].draft(out_tokens[i], caps[i] - len(out_tokens[i]) - 1)
                    for i in active
                ]
            ):
                verify(drafts)
            else:
                # One decoding step for every active row.
                for i in active if lookups else ():
                    lookups[i].advance(0)
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
                out = forward(
                    last[:, None].to(dev),
                    mask.to(dev),
                    pos[:, None].to(dev),
                    cache,
                    [names[i] for i in active],
                )
                last = _pick_tokens(out.logits[:, -1, :], temperature, top_p, gen).cpu()
                pos = pos + 1
                for r, i in enumerate(active):
                    out_tokens[i].append(int(last[r]))
            # Retire finished rows.
            done = [
                (r, i, why) for r, i in enumerate(active) if (why := finished(i, out_tokens[i]))
            ]
            if done:
                for _, i, why in done:
                    complete(i, why)
                    lookups.pop(i, None)
                gone = {r for r, _, _ in done}
                keep = [r for r in range(len(active)) if r not in gone]
                active = [active[r] for r in keep]
                if not active:
                    cache = mask = pos = last = None
                    continue
                idx = torch.tensor(keep)
                for layer in cache.layers:
                    layer.select_rows(idx.to(dev))
                mask, pos, last = mask[idx], pos[idx], last[idx]
                # Drop left padding that no remaining row needs.
                lead = int((mask.sum(0) == 0).long().cumprod(0).sum())
                if lead:
                    for layer in cache.layers:
                        layer.drop_left(lead)
                    mask = mask[:, lead:]
    if stats is not None:
        stats.update(counts)
    return results  # type: ignore[return-value]
