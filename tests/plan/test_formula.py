"""The planner's memory formula: the seeds' arithmetic, term definitions, monotonicity."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codetune.plan import PlanError, Setup
from codetune.plan.arch import from_numbers, resolve_architecture
from codetune.plan.memory import (
    NF4_DQ_BYTES,
    estimate,
    lora_params,
    seed_full_finetune_gb,
    seed_inference_gb,
)


def test_seed_inference_arithmetic_70b_fp32_is_280_gb():
    # Guards the seeds' rule "70B at fp32 = 280 GB" (GB = 1e9 bytes) reproduced exactly.
    assert seed_inference_gb(70e9, 4) == 280.0
    assert seed_inference_gb(1e9, 4) == 4.0


def test_seed_full_finetune_arithmetic_4gb_times_6_is_24_gb():
    # Guards the seeds' rule of thumb "4 GB of weights x 6 = 24 GB" reproduced exactly.
    assert seed_full_finetune_gb(1e9, 4) == 24.0


def test_full_finetune_fp32_states_are_16_bytes_per_param():
    # Guards the formula's own full fine-tune terms: fp32 weights 4 + grads 4 + AdamW 8 bytes.
    arch = from_numbers(params=1e9, layers=16, hidden=2048, heads=16, kv_heads=16, vocab=32000)
    mem = estimate(arch, Setup(lora_rank=0, quantization="none"))
    n = arch.params
    assert mem.weights == pytest.approx(4 * n / 1e9)
    assert mem.gradients == pytest.approx(4 * n / 1e9)
    assert mem.optimizer == pytest.approx(8 * n / 1e9)


def test_nf4_double_quant_bytes_per_param():
    # Guards the QLoRA paper's figure: 4 + 8/64 + 32/(64*256) bits = ~0.516 byte/param.
    assert NF4_DQ_BYTES == pytest.approx(0.5159, abs=1e-4)


def test_known_model_parameter_counts_match_published_sizes():
    # Guards the architecture table: computed sizes match the published parameter counts.
    expected = {
        "HuggingFaceTB/SmolLM2-135M-Instruct": 134.5e6,
        "meta-llama/Llama-3.1-8B": 8.03e9,
        "meta-llama/Llama-3.1-70B": 70.55e9,
        "codellama/CodeLlama-7b-hf": 6.74e9,
        "Qwen/Qwen2.5-Coder-7B-Instruct": 7.62e9,
    }
    for name, n in expected.items():
        assert resolve_architecture(name).params == pytest.approx(n, rel=0.01), name


def test_lora_params_are_r_times_din_plus_dout():
    # Guards LoRA count: r*(d_in+d_out) per adapted matrix (A: r x d_in, B: d_out x r).
    arch = resolve_architecture("embedded")
    s = Setup(lora_rank=8, lora_targets=("q_proj",))
    assert lora_params(arch, s) == 30 * 8 * (576 + 576)


def test_8b_qlora_weights_are_nf4_linear_plus_16bit_embeddings():
    # Guards the weights term: NF4 for the blocks' linears, bf16 for embeddings and LM head.
    arch = resolve_architecture("meta-llama/Llama-3.1-8B")
    mem = estimate(arch, Setup())
    expect = arch.linear_params * NF4_DQ_BYTES + arch.other_params * 2
    assert mem.weights == pytest.approx(expect / 1e9)
    assert 5.0 < mem.weights < 6.5


setups = st.builds(
    Setup,
    seq_len=st.integers(1, 8192),
    micro_batch=st.integers(1, 16),
    lora_rank=st.integers(1, 256),
    quantization=st.sampled_from(["4bit", "8bit", "none"]),
    grad_checkpointing=st.booleans(),
    device=st.sampled_from(["gpu", "cpu"]),
)
models = st.sampled_from(
    ["embedded", "stabilityai/stable-code-3b", "meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-Coder-1.5B"]
)


@settings(max_examples=150, deadline=None)
@given(setups, models, st.integers(1, 4096))
def test_longer_sequences_never_need_less(setup, model, extra):
    # Guards monotonicity: more sequence length never needs less memory.
    arch = resolve_architecture(model)
    longer = dataclasses.replace(setup, seq_len=setup.seq_len + extra)
    assert estimate(arch, longer).total >= estimate(arch, setup).total


@settings(max_examples=150, deadline=None)
@given(setups, models)
def test_4bit_never_more_than_8bit_or_16bit(setup, model):
    # Guards monotonicity: 4-bit never needs more than 8-bit, and 8-bit never more than none.
    arch = resolve_architecture(model)
    mems = [
        estimate(arch, dataclasses.replace(setup, quantization=q)).total
        for q in ("4bit", "8bit", "none")
    ]
    assert mems[0] <= mems[1] <= mems[2]


@settings(max_examples=100, deadline=None)
@given(setups, models)
def test_checkpointing_and_bigger_batches(setup, model):
    # Guards monotonicity: checkpointing never costs memory; a bigger micro batch never saves.
    arch = resolve_architecture(model)
    on = estimate(arch, dataclasses.replace(setup, grad_checkpointing=True)).total
    off = estimate(arch, dataclasses.replace(setup, grad_checkpointing=False)).total
    assert on <= off
    bigger = dataclasses.replace(setup, micro_batch=setup.micro_batch + 1)
    assert estimate(arch, bigger).total >= estimate(arch, setup).total


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seq_len": 0}, "seq len must be a positive integer"),
        ({"micro_batch": -1}, "micro batch must be a positive integer"),
        ({"lora_rank": -2}, "lora rank must be >= 0"),
        ({"quantization": "3bit"}, "not one of 4bit, 8bit, none"),
        ({"lora_rank": 0, "quantization": "4bit"}, "full fine-tuning"),
        ({"lora_targets": ("mlp",)}, "lora targets"),
    ],
)
def test_bad_setup_is_a_clear_error(kwargs, match):
    # Guards bad input: non-positive sizes and impossible combinations name the option.
    with pytest.raises(PlanError, match=match):
        Setup(**kwargs)


def test_bad_architecture_is_a_clear_error(tmp_path):
    # Guards bad input: unknown model, missing config fields, non-positive sizes.
    with pytest.raises(PlanError, match="unknown model"):
        resolve_architecture("nobody/nothing-1b")
    with pytest.raises(PlanError, match="give an explicit instance type"):
        resolve_architecture("s3://bucket/base-models/x/")
    (tmp_path / "config.json").write_text('{"hidden_size": 64, "num_hidden_layers": 2}')
    with pytest.raises(PlanError, match="lacks num_attention_heads, vocab_size"):
        resolve_architecture(str(tmp_path))
    with pytest.raises(PlanError, match="--hidden must be a positive integer"):
        from_numbers(params=1e9, layers=2, hidden=0, heads=2, kv_heads=2, vocab=10)
    with pytest.raises(PlanError, match="too small"):
        from_numbers(params=1e3, layers=2, hidden=64, heads=2, kv_heads=2, vocab=1000)


def test_local_config_json_is_read_without_weights(embedded_model_dir):
    # Guards --model DIR: architecture read from config.json equals the table's entry.
    from_dir = resolve_architecture(str(embedded_model_dir))
    assert from_dir.params == resolve_architecture("embedded").params
