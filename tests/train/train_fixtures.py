"""Tiny bugfix datasets for the training tests, built with codetune.prompts.messages."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from codetune.prompts import messages

# (buggy, fixed) pairs: one injected bug each, like the prepare step produces.
PAIRS = [
    ("def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b"),
    ("def is_even(n):\n    return n % 2 == 1", "def is_even(n):\n    return n % 2 == 0"),
    ("def last(xs):\n    return xs[0]", "def last(xs):\n    return xs[-1]"),
    ("def square(x):\n    return x * 2", "def square(x):\n    return x * x"),
    ("def neg(x):\n    return x", "def neg(x):\n    return -x"),
    ("def inc(x):\n    return x - 1", "def inc(x):\n    return x + 1"),
]

TINY = [
    "max_seq_length=128",
    "per_device_batch_size=2",
    "max_steps=3",
    "warmup_steps=0",
    "learning_rate=0.003",
    "lora.rank=8",
    "lora.alpha=16",
    "lora.dropout=0.0",
    "eval_max_examples=2",
    "eval_batch_size=2",
    "save_steps=100",
]
# A run input's training.overrides for one tiny step (the trace tests: tests/local, tests/cdk).
TINY_RUN_OVERRIDES = {
    "max_steps": 1,
    "per_device_batch_size": 2,
    "max_seq_length": 128,
    "warmup_steps": 0,
    "eval_max_examples": 2,
    "eval_batch_size": 2,
    "gradient_checkpointing": False,
    "save_steps": 100,
}


def record(i: int, buggy: str, fixed: str, split: str) -> dict:
    return {
        "id": f"{split}-{i}",
        "task": "bugfix",
        "messages": messages("bugfix", buggy, answer=fixed),
        "meta": {"path": "m.py", "symbol": f"f{i}", "mutation": "x", "split": split},
    }


def write_dataset(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """A dataset dir in the prepare output layout (train/validation/test.jsonl, manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    splits = {"train": PAIRS[:n_train], "validation": PAIRS[:n_val], "test": PAIRS[-1:]}
    for split, pairs in splits.items():
        with open(root / f"{split}.jsonl", "w") as fh:
            for i, (b, f) in enumerate(pairs):
                fh.write(json.dumps(record(i, b, f, split)) + "\n")
    (root / "manifest.json").write_text(
        json.dumps({"counts": {k: len(v) for k, v in splits.items()}})
    )
    return root


@contextlib.contextmanager
def one_torch_thread():
    """One torch thread while training in-process: on a shared CPU, OpenMP threads
    spin-waiting for each other make runs several times slower (benchmarks/RESULTS.md)."""
    import torch

    before, env = torch.get_num_threads(), os.environ.get("CODETUNE_TORCH_THREADS")
    os.environ["CODETUNE_TORCH_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("CODETUNE_TORCH_THREADS", None)
        else:
            os.environ["CODETUNE_TORCH_THREADS"] = env
