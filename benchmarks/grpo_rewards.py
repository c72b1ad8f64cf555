"""Mean reward per function on TRAINING bugfix prompts before and after N GRPO steps (#11).

A cheap, local read of what the GRPO stage does to the rewards it optimises. The held-out
effect (base vs SFT vs SFT+GRPO on the test split) is measured by the evaluation step of the
full workflow, not here.

    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/grpo_rewards.py \
        [--data DATASET_DIR] [--adapter SFT_ADAPTER_DIR] [--prompts 4] [--samples 4] \
        [--steps 4] [--max-completion-length 48] [--no-4bit] [--set rl.kl_coef=0.04 ...]

Without ``--data`` it uses a built-in set of six one-line bug fixes; without ``--adapter``
it starts from a fresh LoRA adapter on the embedded model (4-bit NF4 base on the CPU).
Prints one JSON object: settings, before/after means per reward, wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MALLOC_ARENA_MAX", "2")

BUILTIN = [
    ("def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b"),
    ("def is_even(n):\n    return n % 2 == 1", "def is_even(n):\n    return n % 2 == 0"),
    ("def last(xs):\n    return xs[0]", "def last(xs):\n    return xs[-1]"),
    ("def square(x):\n    return x * 2", "def square(x):\n    return x * x"),
    ("def neg(x):\n    return x", "def neg(x):\n    return -x"),
    ("def inc(x):\n    return x - 1", "def inc(x):\n    return x + 1"),
]


def _records(data: Path | None) -> list[dict]:
    from codetune.io import read_jsonl
    from codetune.prompts import messages

    if data is not None:
        return list(read_jsonl(data / "train.jsonl"))
    return [
        {
            "id": f"b{i}",
            "task": "bugfix",
            "messages": messages("bugfix", buggy, answer=fixed),
            "meta": {"split": "train", "mutation": "builtin"},
        }
        for i, (buggy, fixed) in enumerate(BUILTIN)
    ]


def _load(adapter: Path | None, four_bit: bool = True):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from codetune.model import resolve_base_model

    base_dir = resolve_base_model(None)
    tok = AutoTokenizer.from_pretrained(base_dir)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    base = AutoModelForCausalLM.from_pretrained(
        base_dir,
        quantization_config=quant if four_bit else None,
        dtype=torch.float32,
        device_map="cpu",
    )
    if adapter is not None:
        return PeftModel.from_pretrained(base, adapter, is_trainable=True), tok
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(base, lora), tok


def _sample_rewards(model, tok, rows, samples, max_new, temperature, seed) -> dict:
    """Mean of each reward over ``samples`` sampled completions per prompt."""
    import torch

    from codetune.prompts import render_chat
    from codetune.train import rewards

    torch.manual_seed(seed)
    tok.padding_side = "left"
    texts = [render_chat(tok, r["prompt"]) for r in rows]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    model.eval()
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            max_new_tokens=max_new,
            num_return_sequences=samples,
            pad_token_id=tok.pad_token_id or tok.eos_token_id,
        )
    completions = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    refs = [r["reference"] for r in rows for _ in range(samples)]
    scores = rewards.score_all(completions, refs)
    return {k: sum(v) / len(v) for k, v in scores.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--adapter", type=Path, default=None)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--max-completion-length", type=int, default=48)
    p.add_argument(
        "--no-4bit",
        action="store_true",
        help="fp32 base instead of NF4: bitsandbytes' 4-bit CPU sampling is the slow part",
    )
    p.add_argument("--set", action="append", default=[], help="rl.<key>=value overrides")
    a = p.parse_args(argv)

    from codetune.config import load_config
    from codetune.metrics import format_metrics
    from codetune.train.grpo import check_rl_inputs, run_grpo
    from codetune.train.rl_config import RLConfig

    overrides = [
        "enabled=true",
        f"steps={a.steps}",
        f"max_completion_length={a.max_completion_length}",
    ] + [s.removeprefix("rl.") for s in a.set]
    cfg = load_config(RLConfig, None, overrides)
    records = _records(a.data)
    rows = check_rl_inputs(records, cfg)[: a.prompts]
    model, tok = _load(a.adapter, four_bit=not a.no_4bit)

    t0 = time.perf_counter()
    before = _sample_rewards(
        model, tok, rows, a.samples, a.max_completion_length, cfg.temperature, 1
    )
    t1 = time.perf_counter()
    summary = run_grpo(
        model,
        tok,
        records,
        cfg,
        Path("/tmp/codetune-grpo-bench"),
        lambda step, v: print(format_metrics(step, v), file=sys.stderr, flush=True),
    )
    t2 = time.perf_counter()
    after = _sample_rewards(
        model, tok, rows, a.samples, a.max_completion_length, cfg.temperature, 1
    )
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "settings": {
                    "prompts": len(rows),
                    "samples_per_prompt": a.samples,
                    "adapter": str(a.adapter) if a.adapter else "fresh LoRA",
                    "base": "fp32" if a.no_4bit else "nf4 4-bit",
                    "data": str(a.data) if a.data else "builtin",
                    "rl": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                },
                "before": before,
                "after": after,
                "grpo": {k: summary[k] for k in ("first", "last", "wall_seconds")},
                "wall_seconds": {
                    "sample_before": round(t1 - t0, 1),
                    "grpo": round(t2 - t1, 1),
                    "sample_after": round(t3 - t2, 1),
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
