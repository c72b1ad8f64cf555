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


@pytest.fixture
def random_adapter_stub(tmp_path, embedded_model_dir):
    """An adapter directory with only its config (enough for input validation)."""
    d = tmp_path / "stub-adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(embedded_model_dir), "peft_type": "LORA"})
    )
    return d
