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
    rows = adapters if isinstance(adapters, list) else [adapters] * len(prompts)
    if len(rows) != len(prompts):
        raise ValueError("adapters must have one entry per prompt")
    names = [BASE if a in (None, BASE) else a for a in rows]
    unknown = sorted({n for n in names if n != BASE and n not in lm.adapters})
    if unknown:
        raise CodetuneError(
            f"unknown adapter(s) {', '.join(unknown)}; known: {', '.join([BASE, *sorted(lm.adapters)])}"
        )
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
