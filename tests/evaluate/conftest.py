"""Fixtures for the evaluation tests: a tiny bugfix dataset and a random LoRA adapter."""

from __future__ import annotations

import json
import sys

import pytest


@pytest.fixture(scope="session")
def bugfix_data(tmp_path_factory, repo_root):
    """A bugfix test split in the prepare contract (standard-library functions, one mutation
    each), trimmed to the 3 shortest records so generation stays short on CPU."""
    sys.path.insert(0, str(repo_root / "benchmarks"))
    try:
        from _bugfix_data import build
    finally:
        sys.path.pop(0)
    d = build(tmp_path_factory.mktemp("data"), 40)
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: len(r["messages"][-1]["content"]))
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    return d


@pytest.fixture(scope="session")
def random_adapter(embedded_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights, as tests/test_generation.py makes one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    out = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, cfg).save_pretrained(out)
    return out
