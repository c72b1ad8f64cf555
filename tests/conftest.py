"""Shared fixtures.

The embedded model is fetched once by `make setup` into $CODETUNE_HOME (the Makefile points
it at .cache/codetune in the repository); tests reuse that cache and never download.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CODETUNE_HOME", str(REPO / ".cache" / "codetune"))
os.environ.setdefault("MALLOC_ARENA_MAX", "2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The converted embedded checkpoint (fetched by `make setup`; fetched here if missing)."""
    from codetune.model import fetch_embedded

    return fetch_embedded()


@pytest.fixture(scope="session")
def random_adapter(embedded_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) weights: its answers differ from the base's.
    Shared by the generation, evaluation and serving tests (built once per session)."""
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
