"""Training throughput: codetune's recipe vs the seed recipe, same data, model and machine.

- **seed**: HF ``Trainer`` + ``DataCollatorForLanguageModeling`` (mlm=False), every example
  padded to 2,048 tokens, loss on every (non-pad) token; micro-batch 1 with gradient
  accumulation (a 2,048 x 49k fp32 logit tensor per example rules out bigger micro-batches).
- **codetune**: :func:`codetune.train.run_training` with the ``cpu-smollm2`` config: loss on
  the assistant's tokens only, padding-free micro-batches (no padding at all).

Both use the same 4-bit NF4 base (embedded SmolLM2-135M), the same LoRA (rank 16, all linear
layers), gradient checkpointing, the same examples per optimizer step and the same number of
steps. Each recipe runs in its own process so peak RSS is its own.

Reported per recipe: wall seconds of ``trainer.train()``, loss-bearing tokens/s (tokens the
recipe computes loss on), answer tokens/s (assistant tokens processed — what both recipes are
trying to teach), peak RSS.

    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/train_throughput.py --steps 2 --per-step 4
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULES = [
    "textwrap",
    "shlex",
    "statistics",
    "fractions",
    "heapq",
    "bisect",
    "colorsys",
    "calendar",
    "string",
    "difflib",
    "fnmatch",
    "posixpath",
    "base64",
    "quopri",
]
RECIPES = ["codetune-padding_free", "codetune-padded", "seed"]
MUTATIONS = [(" + ", " - "), (" < ", " <= "), (" == ", " != "), (" > ", " >= "), ("True", "False")]


def build_dataset(root: Path, n: int) -> Path:
    """``n`` bugfix examples from standard-library functions (one injected bug each)."""
    from codetune.prompts import messages

    rows = []
    for mod_name in MODULES:
        src = Path(importlib.import_module(mod_name).__file__).read_text()
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.FunctionDef):
                continue
            code = ast.get_source_segment(src, node)
            if not code or not 200 <= len(code) <= 1100 or node.col_offset:
                continue
            for old, new in MUTATIONS:
                if old in code:
                    buggy = code.replace(old, new, 1)
                    rows.append(
                        {
                            "id": f"{mod_name}.{node.name}",
                            "task": "bugfix",
                            "messages": messages("bugfix", buggy, answer=code),
                            "meta": {"path": mod_name, "symbol": node.name},
                        }
                    )
                    break
            if len(rows) >= n:
                break
        if len(rows) >= n:
            break
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "train.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return root


def run_seed(data: Path, steps: int, per_step: int) -> dict:
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    from codetune.io import read_jsonl
    from codetune.model import resolve_base_model
    from codetune.prompts import render_chat
    from codetune.train.config import load_train_config
    from codetune.train.runner import load_model

    cfg = load_train_config("cpu-smollm2")
    base = resolve_base_model(None)
    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [
        render_chat(tok, r["messages"], add_generation_prompt=False)
        for r in read_jsonl(data / "train.jsonl")
    ]
    ds = [tok(t, padding="max_length", max_length=2048, truncation=True) for t in texts]
    ds = [{"input_ids": d["input_ids"], "attention_mask": d["attention_mask"]} for d in ds]
    model = load_model(cfg, base, torch.float32, cuda=False)
    counted = {"loss": 0, "answer": 0}
    # answer tokens: the assistant turn's length, for the like-for-like rate
    answer_len = []
    for r in read_jsonl(data / "train.jsonl"):
        prompt = render_chat(tok, r["messages"][:-1], add_generation_prompt=True)
        full = render_chat(tok, r["messages"], add_generation_prompt=False)
        answer_len.append(len(tok(full[len(prompt) :], add_special_tokens=False)["input_ids"]))

    class Counting(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            counted["loss"] += int((inputs["labels"][..., 1:] != -100).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=per_step,
        learning_rate=cfg.learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
        optim="adamw_torch",
        dataloader_num_workers=0,
    )
    trainer = Counting(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
    )
    t = time.monotonic()
    trainer.train()
    secs = time.monotonic() - t
    n_examples = steps * per_step
    # Trainer samples randomly; use the mean answer length over the examples it could draw.
    answers = sum(answer_len) / len(answer_len) * n_examples
    return {
        "recipe": "seed",
        "train_seconds": secs,
        "loss_bearing_tokens": counted["loss"],
        "answer_tokens": answers,
        "tokens_processed": n_examples * 2048,
    }


def run_codetune(data: Path, steps: int, per_step: int, batching: str = "padding_free") -> dict:
    from codetune.train import load_train_config, run_training

    cfg = load_train_config(
        "cpu-smollm2",
        [
            f"batching={batching}",
            f"max_steps={steps}",
            f"per_device_batch_size={per_step}",
            "max_seq_length=2048",
            "save_steps=1000",
        ],
    )
    out = Path(tempfile.mkdtemp())
    with contextlib.redirect_stdout(io.StringIO()):
        s = run_training(cfg, data, out / "adapter", checkpoints_dir=out / "ck")
    secs = s["loss_bearing_tokens"] / s["loss_bearing_tokens_per_second"]
    return {
        "recipe": f"codetune-{batching}",
        "train_seconds": secs,
        "loss_bearing_tokens": s["loss_bearing_tokens"],
        "answer_tokens": s["loss_bearing_tokens"],
        "tokens_processed": s["tokens_seen"],
    }


def child(recipe: str, data: Path, steps: int, per_step: int) -> None:
    import torch

    if os.environ.get("CODETUNE_TORCH_THREADS"):  # same thread count for every recipe
        torch.set_num_threads(int(os.environ["CODETUNE_TORCH_THREADS"]))
    if recipe == "seed":
        res = run_seed(data, steps, per_step)
    else:
        res = run_codetune(data, steps, per_step, recipe.split("-", 1)[1])
    res["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res["loss_bearing_tokens_per_second"] = res["loss_bearing_tokens"] / res["train_seconds"]
    res["answer_tokens_per_second"] = res["answer_tokens"] / res["train_seconds"]
    print("RESULT " + json.dumps(res), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--per-step", type=int, default=4, help="examples per optimizer step")
    ap.add_argument("--data", type=Path, default=None, help="dataset dir (default: built)")
    ap.add_argument("--child", choices=RECIPES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    data = a.data or build_dataset(Path(tempfile.mkdtemp()) / "data", a.steps * a.per_step)
    if a.child:
        child(a.child, data, a.steps, a.per_step)
        return 0
    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    results = {}
    for recipe in RECIPES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                recipe,
                "--data",
                str(data),
                "--steps",
                str(a.steps),
                "--per-step",
                str(a.per_step),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            return 1
        results[recipe] = json.loads(line[7:])
        print(json.dumps(results[recipe]), flush=True)
    s = results["seed"]
    summary = {}
    for name in RECIPES[:-1]:
        c = results[name]
        summary[name] = {
            "loss_bearing_tokens_per_second_ratio": c["loss_bearing_tokens_per_second"]
            / s["loss_bearing_tokens_per_second"],
            "answer_tokens_per_second_ratio": c["answer_tokens_per_second"]
            / s["answer_tokens_per_second"],
            "wall_ratio_seed_over_codetune": s["train_seconds"] / c["train_seconds"],
            "peak_rss_codetune_gb": c["peak_rss_bytes"] / 2**30,
            "peak_rss_seed_gb": s["peak_rss_bytes"] / 2**30,
        }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
