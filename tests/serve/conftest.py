"""Fixtures for the inference server tests: a random LoRA adapter and servers on free ports.

Each test module starts ONE real uvicorn server (loopback only) with the embedded model;
generation runs on one torch thread (much faster than two on a CPU shared with other jobs).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def random_adapter(embedded_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights: its answers differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, cfg)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out
