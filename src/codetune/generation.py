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


DTYPES = ("auto", "float32", "bfloat16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16: Sapphire Rapids
    and later Xeons, Zen 4 and later EPYCs). Elsewhere bf16 matmuls are emulated and slower
    than fp32."""
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def resolve_dtype(dtype: str, cuda: bool):
    """The torch dtype for ``dtype`` (one of DTYPES). ``auto`` is bf16 on a GPU that has it
    and on a CPU that multiplies bf16 natively (a decoding step of the embedded model at 16
    rows is 1.9x faster there, benchmarks/RESULTS.md), else fp32.

    Raises CodetuneError for an unknown name or bf16 on hardware without it."""
    import torch

    if dtype not in DTYPES:
        raise CodetuneError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    native = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
    if dtype == "auto":
        return torch.bfloat16 if native else torch.float32
    if dtype == "bfloat16" and cuda and not native:
        raise CodetuneError("dtype bfloat16: this GPU has no bf16; use float32 or auto")
    return getattr(torch, dtype)


def load_model(
    base_model: str | None = None,
    adapters: dict[str, str | Path] | None = None,
    *,
    quantization: str = "none",
    device: str | None = None,
    dtype: str | None = None,
) -> LoadedModel:
    """Load the base model (``None`` = embedded, or the base the adapter names) and attach
    ``adapters`` (name -> dir). ``quantization`` is ``none`` or ``4bit`` (NF4, bitsandbytes).
    ``dtype`` is one of DTYPES (:func:`resolve_dtype`); ``None`` = bf16 on a GPU that has it,
    fp32 on the CPU (the evaluation's setting: its answers do not depend on the CPU model).

    Raises CodetuneError for a missing adapter directory, an unknown quantization or dtype.
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
    if dtype is None:
        dtype = "auto" if cuda else "float32"
    dtype = resolve_dtype(dtype, cuda)
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
    unfreeze_for_inference(model).eval()
    ctx = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    log.info(
        "loaded %s (%s) with adapters %s in %.1fs",
        base_path,
        str(dtype).removeprefix("torch."),
        list(adapters),
        time.perf_counter() - t0,
    )
    return LoadedModel(
        model=model, tokenizer=tok, base_path=base_path, adapters=adapters, context_window=ctx
    )


def unfreeze_for_inference(model):
    """Mark ``model``'s floating-point weights as requiring grad again (PEFT freezes the base
    weights; a merged model keeps them frozen) and return it. Generation runs under
    ``torch.inference_mode``, so nothing is ever recorded for them; what the flag changes is
    torch's matmul for a 3-D input (a prefill, a verifying step): with a frozen weight it
    takes its batched path and, for bf16 on the CPU, copies the weight once per row (oneDNN
    wants it contiguous) — a 16-prompt prefill 2.5 s instead of 0.14 s; fp32 1.25x slower."""
    for p in model.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    return model


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
    unfreeze_for_inference(lm.model)
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
DRAFT_POSITIONS = 256  # positions a verifying step may hold (rows x (1 + longest draft))


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


PACKED_SDPA = "codetune_packed_sdpa"  # the attention implementation name while decoding


def _packed_gqa_sdpa(module, query, key, value, attention_mask, **kwargs):
    """PyTorch SDPA for grouped-query attention over a KV cache without copying the cache.

    For a step of several query positions per row (prompt-lookup verification) transformers'
    ``sdpa`` path repeats every layer's cached keys and values once per query head of a group
    (``repeat_kv``: 3x for SmolLM2, a copy of the whole cache in every layer and step), which
    made a verifying forward cost 2-3x a one-position one (benchmarks/RESULTS.md). Here the
    query heads that share a KV head are stacked along the query axis instead — what
    transformers itself does for a single query position — and the mask is repeated to match,
    so the cache is read in place. Same scores and sums; other cases (a prefill, one position)
    go to the stock path."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n_rep = getattr(module, "num_key_value_groups", 1)
    b, h, q, d = query.shape
    stock = n_rep == 1 or q == 1 or key.shape[-2] <= q  # one position, or a prefill
    if stock or attention_mask is None or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    k_len = attention_mask.shape[-1]
    mask = attention_mask.expand(b, 1, q, k_len)[:, :, None]
    mask = mask.expand(b, 1, n_rep, q, k_len).reshape(b, 1, n_rep * q, k_len)
    out = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(b, h // n_rep, n_rep * q, d),
        key,
        value,
        attn_mask=mask,
        scale=kwargs.get("scaling"),
    )
    return out.reshape(b, h, q, d).transpose(1, 2).contiguous(), None


def _packed_attention(model):
    """Context: ``model`` (an ``sdpa`` one; others are left alone) attends with
    :func:`_packed_gqa_sdpa` and transformers' own SDPA masks."""
    import contextlib

    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return contextlib.nullcontext()
    AttentionInterface.register(PACKED_SDPA, _packed_gqa_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)

    @contextlib.contextmanager
    def swapped():
        cfg._attn_implementation = PACKED_SDPA
        try:
            yield
        finally:
            cfg._attn_implementation = "sdpa"

    return swapped()


PER_POSITION = ("mlp", "q_proj", "k_proj", "v_proj", "o_proj", "lm_head")


def _per_position_modules(model) -> list:
    """The modules that transform each position on its own (projections, MLPs, the LM head):
    ~95% of a decoding step's arithmetic for a small model."""
    return [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in PER_POSITION]


class _OnlyPositions:
    """Context: ``modules`` compute only the flat positions ``keep`` of their ``(rows,
    positions, features)`` input; the others get zeros. A verifying step pads every row to
    the longest draft, and the padding is masked out and never read, so the projections and
    MLPs skip it (ragged verification: the work follows each row's own draft length)."""

    def __init__(self, modules: list, keep):
        self.modules, self.keep, self.saved = modules, keep, []

    def __enter__(self):
        keep = self.keep
        for mod in self.modules:
            orig = mod.forward

            def forward(x, *args, _orig=orig, **kwargs):
                flat = x.reshape(-1, x.shape[-1])
                y = _orig(flat.index_select(0, keep), *args, **kwargs)
                out = y.new_zeros((flat.shape[0], y.shape[-1]))
                out.index_copy_(0, keep, y)
                return out.view(*x.shape[:-1], y.shape[-1])

            self.saved.append(mod.__dict__.get("forward"))
            mod.forward = forward
        return self

    def __exit__(self, *exc):
        for mod, old in zip(self.modules, self.saved, strict=True):
            if old is None:
                del mod.forward
            else:
                mod.forward = old


class _Batch:
    """The rows decoding together in :func:`generate_continuous`: one shared KV cache (rows
    left-padded to a common length, masked), each row's position, last token and answer so
    far. ``admit`` prefills new rows into it, ``step`` decodes one token per row, ``verify``
    checks drafts, ``retire`` drops finished rows."""

    def __init__(self, lm, ids, names, caps, sampling, stops, per_row_names, counts):
        import torch

        self.lm, self.model, self.tok = lm, lm.model, lm.tokenizer
        self.ids, self.names, self.caps, self.stops = ids, names, caps, stops
        self.temperature, self.top_p, seed = sampling
        self.gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.eos = self.tok.eos_token_id
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos
        self.per_row_names, self.counts, self.dev = per_row_names, counts, lm.device
        # per-row adapters route by batch row: those batches verify padded
        self.per_position = [] if per_row_names else _per_position_modules(self.model)
        self.active: list[int] = []
        self.out_tokens: dict[int, list[int]] = {}
        self.started: dict[int, float] = {}
        self.cache = self.mask = self.pos = self.last = None

    def forward(self, input_ids, attn, position_ids, past, rows, keep=1):
        kw = {"adapter_names": [self.names[i] for i in rows]} if self.per_row_names else {}
        self.counts["forwards"] += 1
        d = self.dev
        return self.model(
            input_ids=input_ids.to(d),
            attention_mask=attn.to(d),
            position_ids=position_ids.to(d),
            past_key_values=past,
            use_cache=True,
            logits_to_keep=keep,
            **kw,
        )

    def finished(self, i: int) -> str | None:
        toks = self.out_tokens[i]
        if toks and toks[-1] == self.eos:
            return "stop"
        if self.stops:
            tail = self.tok.decode(toks[-16:], skip_special_tokens=True)
            if any(s in tail for s in self.stops):
                return "stop"
        if len(toks) >= self.caps[i]:
            return "length"
        return None

    def complete(self, i: int, why: str) -> Generation:
        toks = self.out_tokens.pop(i)
        if toks and toks[-1] == self.eos:
            toks = toks[:-1]
        text = self.tok.decode(toks, skip_special_tokens=True)
        for s in self.stops:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
                why = "stop"
        return Generation(
            text=text,
            prompt_tokens=len(self.ids[i]),
            completion_tokens=len(toks),
            finish_reason=why,
            adapter=None if self.names[i] == BASE else self.names[i],
            seconds=time.perf_counter() - self.started.pop(i),
        )

    def admit(self, new: list[int]) -> None:
        """Prefill rows ``new`` (left-padded to their longest prompt) in one forward that keeps
        only the last position's logits, and merge their cache into the running one."""
        import torch
        import torch.nn.functional as F

        width = max(len(self.ids[i]) for i in new)
        inp = torch.full((len(new), width), self.pad, dtype=torch.long)
        m_new = torch.zeros((len(new), width), dtype=torch.long)
        for r, i in enumerate(new):
            inp[r, width - len(self.ids[i]) :] = torch.tensor(self.ids[i])
            m_new[r, width - len(self.ids[i]) :] = 1
            self.started[i] = time.perf_counter()
        p_new = (m_new.cumsum(-1) - 1).clamp(min=0)
        c_new = _slab_cache(self.model.config.num_hidden_layers)
        out = self.forward(inp, m_new, p_new, c_new, new)
        first = _pick_tokens(out.logits[:, -1, :], self.temperature, self.top_p, self.gen).cpu()
        if self.cache is None:
            self.cache, self.mask = c_new, m_new
            self.pos, self.last = m_new.sum(-1), first
        else:
            t_old = self.mask.shape[1]
            self.cache = _merge_caches(self.cache, c_new, t_old, width)
            total = max(t_old, width)
            self.mask = torch.cat(
                [F.pad(self.mask, (total - t_old, 0)), F.pad(m_new, (total - width, 0))]
            )
            self.pos = torch.cat([self.pos, m_new.sum(-1)])
            self.last = torch.cat([self.last, first])
        self.active += new
        for r, i in enumerate(new):
            self.out_tokens[i] = [int(first[r])]

    def step(self) -> None:
        """One decoding step: one token for every active row."""
        import torch

        ones = torch.ones((len(self.active), 1), dtype=torch.long)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.forward(
            self.last[:, None], self.mask, self.pos[:, None], self.cache, self.active
        )
        self.last = _pick_tokens(out.logits[:, -1, :], self.temperature, self.top_p, self.gen)
        self.last = self.last.cpu()
        self.pos = self.pos + 1
        for r, i in enumerate(self.active):
            self.out_tokens[i].append(int(self.last[r]))

    def verify(self, drafts: list[list[int]]) -> list[int]:
        """One forward over every row's last token + draft (rows padded to the longest); each
        row keeps the draft's longest prefix that equals its greedy tokens, plus the model's
        next token. The cache keeps the positions some row accepted; a row's rejected ones are
        masked; the padding is not computed (:class:`_OnlyPositions`). Returns the accepted
        draft length per row."""
        import contextlib

        import torch

        b, width = len(self.active), 1 + max(len(d) for d in drafts)
        inp = torch.full((b, width), self.pad, dtype=torch.long)
        inp[:, 0] = self.last
        step = torch.zeros((b, width), dtype=torch.long)
        for r, d in enumerate(drafts):
            inp[r, 1 : 1 + len(d)] = torch.tensor(d, dtype=torch.long)
            step[r, : 1 + len(d)] = 1
        positions = self.pos[:, None] + torch.arange(width)
        attn = torch.cat([self.mask, step], dim=1)
        ragged = contextlib.nullcontext()
        if self.per_position and int(step.sum()) < step.numel():
            keep = step.flatten().nonzero().squeeze(1).to(self.dev)
            ragged = _OnlyPositions(self.per_position, keep)
        with ragged:
            out = self.forward(inp, attn, positions, self.cache, self.active, keep=width)
        greedy = out.logits.argmax(-1).cpu().tolist()
        kept, accepted = [], []
        for r, i in enumerate(self.active):
            d, g = drafts[r], greedy[r]
            m = 0
            while m < len(d) and d[m] == g[m]:
                m += 1
            for t in (*d[:m], g[m]):  # stop where plain decoding would have stopped
                self.out_tokens[i].append(t)
                if self.finished(i):
                    break
            kept.append(m + 1)
            accepted.append(m)
            self.counts["drafted"] += len(d)
            self.counts["accepted"] += m
        n_keep = max(kept)
        if n_keep < width:  # roll back what no row accepted
            for layer in self.cache.layers:
                layer.n -= width - n_keep
                layer._views()
        step = (torch.arange(n_keep)[None, :] < torch.tensor(kept)[:, None]).long()
        self.mask = torch.cat([self.mask, step], dim=1)
        self.pos = self.pos + torch.tensor(kept)
        self.last = torch.tensor([greedy[r][k - 1] for r, k in enumerate(kept)])
        return accepted

    def retire(self) -> list[tuple[int, str]]:
        """Drop the rows that finished (returned as (index, reason)) from the batch, and the
        left padding no remaining row needs."""
        import torch

        done = [(r, i, why) for r, i in enumerate(self.active) if (why := self.finished(i))]
        if not done:
            return []
        gone = {r for r, _, _ in done}
        keep = [r for r in range(len(self.active)) if r not in gone]
        self.active = [self.active[r] for r in keep]
        if not self.active:
            self.cache = self.mask = self.pos = self.last = None
            return [(i, why) for _, i, why in done]
        idx = torch.tensor(keep)
        for layer in self.cache.layers:
            layer.select_rows(idx.to(self.dev))
        self.mask, self.pos, self.last = self.mask[idx], self.pos[idx], self.last[idx]
        lead = int((self.mask.sum(0) == 0).long().cumprod(0).sum())
        if lead:
            for layer in self.cache.layers:
                layer.drop_left(lead)
            self.mask = self.mask[:, lead:]
        return [(i, why) for _, i, why in done]


def _routing(lm: LoadedModel, names: list[str]):
    """(context that selects the adapter for the whole batch, whether rows need per-row
    adapter names); raises CodetuneError for adapters on a model without any."""
    import contextlib

    from peft import PeftModel

    model = lm.model
    if not isinstance(model, PeftModel):
        if set(names) != {BASE}:
            raise CodetuneError("no adapters are loaded; only the base model can answer")
        return contextlib.nullcontext(), False
    if set(names) == {BASE}:
        return model.disable_adapter(), False
    if len(set(names)) == 1:
        model.set_adapter(names[0])
        return contextlib.nullcontext(), False
    return contextlib.nullcontext(), True  # PEFT mixed-adapter batch


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
    routing, per_row_names = _routing(lm, names)
    ids = lm.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    counts = {"forwards": 0, "drafted": 0, "accepted": 0}
    batch = _Batch(
        lm, ids, names, caps, (temperature, top_p, seed), list(stop or []), per_row_names, counts
    )
    refill_at = max(1, max_batch // 4)  # admit in groups: a prefill of 1 row is inefficient
    queue = deque(range(n))
    results: list[Generation | None] = [None] * n
    lookups: dict[int, _PromptLookup] = {}
    with torch.inference_mode(), routing, _packed_attention(lm.model):
        while queue or batch.active:
            free = max_batch - len(batch.active)
            if queue and (free >= refill_at or not batch.active or len(queue) <= free):
                new = [queue.popleft() for _ in range(min(free, len(queue)))]
                batch.admit(new)
                for i in new if draft_tokens else ():
                    lookups[i] = _PromptLookup(ids[i], draft_ngram, draft_tokens)
            elif lookups and any(drafts := _drafts(batch, lookups)):
                accepted = batch.verify(drafts)
                for i, d, m in zip(batch.active, drafts, accepted, strict=True):
                    lookups[i].advance(m, len(d))
            else:
                for i in batch.active if lookups else ():
                    lookups[i].advance(0)
                batch.step()
            for i, why in batch.retire():
                results[i] = batch.complete(i, why)
                lookups.pop(i, None)
                if on_finish is not None:
                    on_finish(i, results[i])
    if stats is not None:
        stats.update(counts)
    return results  # type: ignore[return-value]


def _drafts(batch: _Batch, lookups: dict[int, _PromptLookup]) -> list[list[int]]:
    """Each active row's draft, never past its own cap, and at most
    ``DRAFT_POSITIONS / rows - 1`` tokens: every row of a verifying step is padded to the
    longest draft, and on a CPU a step's cost grows with its positions once a batch is
    full (32 rows x 5 positions: 2x one position), while 4 rows verify 9 positions each for
    1.7x one (benchmarks/RESULTS.md) — so a full batch drafts short, its last rows long."""
    step_k = max(1, DRAFT_POSITIONS // len(batch.active) - 1)
    return [
        lookups[i].draft(
            batch.out_tokens[i], min(step_k, batch.caps[i] - len(batch.out_tokens[i]) - 1)
        )
        for i in batch.active
    ]
