"""GRPO stage: start-up validation, and a few real GRPO steps on the embedded
model with a 4-bit base and a LoRA adapter (CPU)."""

from __future__ import annotations

import json
import os

import pytest

from codetune.errors import CodetuneError, ConfigError
from codetune.metrics import format_metrics, parse_metrics
from codetune.prompts import messages
from codetune.train.grpo import check_rl_inputs, rl_prompts, run_grpo
from codetune.train.rl_config import DEFAULT_REWARD_WEIGHTS, RLConfig

FIXES = [
    ("def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b"),
    ("def neg(x):\n    return x", "def neg(x):\n    return -x"),
]


def rec(i, buggy, fixed, task="bugfix", split="train"):
    return {
        "id": f"{split}-{task}-{i}",
        "task": task,
        "messages": messages(task, buggy, answer=fixed),
        "meta": {"path": "m.py", "symbol": f"f{i}", "mutation": None, "split": split},
    }


TRAIN = [rec(i, b, f) for i, (b, f) in enumerate(FIXES)]


def test_prompts_are_bugfix_user_turns_with_the_correct_function_as_reference():
    # GRPO sees only the prompt (never the answer) and scores against the original function.
    rows = rl_prompts(TRAIN + [rec(9, "def f(", "def f(): pass", task="complete")])
    assert len(rows) == 2
    assert [m["role"] for m in rows[0]["prompt"]] == ["user"]
    assert rows[0]["reference"] == FIXES[0][1]


def test_no_bugfix_examples_is_a_config_error():
    # Bad input: rl.enabled with no bugfix examples fails at start-up, naming the option.
    only_complete = [rec(0, "def f():", "def f(): pass", task="complete")]
    with pytest.raises(ConfigError, match="rl.enabled .* no bugfix examples"):
        check_rl_inputs(only_complete, RLConfig(enabled=True))


def test_run_grpo_validates_before_touching_the_model():
    # The check runs first: no model is needed to get the error.
    with pytest.raises(ConfigError, match="no bugfix examples"):
        run_grpo(None, None, [], RLConfig(enabled=True), "/nonexistent", print)


def test_test_split_records_are_refused():
    # Never train on the test split: a record that says it is from there is an error.
    with pytest.raises(CodetuneError, match="'test' split"):
        check_rl_inputs([rec(0, *FIXES[0], split="test")], RLConfig(enabled=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kl_coef": 1.5}, "rl.kl_coef"),
        ({"kl_coef": -0.1}, "rl.kl_coef"),
        ({"generations": 1}, "rl.generations"),
        ({"generations": 65}, "rl.generations"),
        ({"reward_weights": {"exact_fix": 1.0, "style": 0.5}}, "unknown reward.*style"),
        ({"reward_weights": {"exact_fix": -1.0}}, "rl.reward_weights.exact_fix"),
        ({"reward_weights": {"exact_fix": 0.0}}, "at least one"),
        ({"prompts_per_step": 0}, "rl.prompts_per_step"),
        ({"temperature": 0.0}, "rl.temperature"),
        ({"learning_rate": 0.0}, "rl.learning_rate"),
    ],
)
def test_out_of_range_settings_are_config_errors(overrides, message):
    # Bad input: KL coefficient, generation count, unknown reward weight -> ConfigError.
    with pytest.raises(ConfigError, match=message):
        check_rl_inputs(TRAIN, RLConfig(enabled=True, **overrides))


def test_rl_section_loads_from_yaml_overrides():
    # The rl: section goes through the shared config loader (unknown keys fail there).
    from codetune.config import load_config

    cfg = load_config(RLConfig, None, ["enabled=true", "generations=3", "kl_coef=0.1"])
    assert (cfg.enabled, cfg.generations, cfg.kl_coef) == (True, 3, 0.1)
    with pytest.raises(ConfigError):
        load_config(RLConfig, None, ["kl_coef=2"])


# Decoder layers of the embedded model kept for the GRPO steps test. GRPO samples token by
# token through bitsandbytes' 4-bit CPU kernels: with all 30 layers two tiny steps took
# ~15 minutes on the shared 2-core machine. The first layers of the real checkpoint exercise
# the same code path (4-bit base, LoRA, TRL generation, rewards, KL, optimizer) at a fraction
# of the cost; set CODETUNE_GRPO_TEST_LAYERS=30 to run the full model.
TEST_LAYERS = int(os.environ.get("CODETUNE_GRPO_TEST_LAYERS", "2"))


@pytest.fixture(scope="module")
def lora_model(embedded_model_dir):
    """The embedded model's checkpoint (first TEST_LAYERS layers), NF4 4-bit base
    (bitsandbytes on CPU) + a fresh LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    base = AutoModelForCausalLM.from_pretrained(
        embedded_model_dir,
        quantization_config=quant,
        dtype=torch.float32,
        device_map="cpu",
        num_hidden_layers=TEST_LAYERS,
    )
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(base, lora), tok


@pytest.mark.slow
def test_grpo_steps_run_log_rewards_and_change_the_adapter(lora_model, tmp_path, capsys):
    # a few GRPO steps on CPU with the embedded model run, log rewards through the
    # metric line format, and change the adapter's weights; the adapter keeps its dtype and
    # TRL's temporary reference adapter is gone afterwards.
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from codetune.train.runner import save_sft_adapter

    model, tok = lora_model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # What the trainer does before GRPO with rl.enabled: keep the SFT-only adapter.
    sft_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    save_sft_adapter(model, tok, tmp_path / "sft", "embedded")
    lines = []
    cfg = RLConfig(
        enabled=True,
        steps=2,
        generations=4,
        prompts_per_step=2,
        max_completion_length=16,
        learning_rate=5e-3,
        temperature=1.0,
    )
    summary = run_grpo(
        model,
        tok,
        TRAIN,
        cfg,
        tmp_path / "grpo",
        lambda step, v: lines.append(format_metrics(step, v)),
    )

    # stdout carries our metric lines only, not Trainer's raw log dicts.
    assert "{'loss'" not in capsys.readouterr().out
    parsed = [parse_metrics(line) for line in lines]
    assert [p["step"] for p in parsed] == [1.0, 2.0]
    for p in parsed:
        for key in ["reward", "kl", "completion_length"] + [
            f"reward_{n}" for n in DEFAULT_REWARD_WEIGHTS
        ]:
            assert key in p, (key, lines)
        assert 0.0 < p["completion_length"] <= 16
    assert summary["steps"] == 2 and summary["last"]["reward"] == parsed[-1]["reward"]
    # The summary is published with the adapter; TRL's scratch output is not.
    assert sorted(p.name for p in (tmp_path / "grpo").iterdir()) == ["rl_summary.json"]
    assert (
        json.loads((tmp_path / "grpo" / "rl_summary.json").read_text())["last"] == summary["last"]
    )

    after = dict(model.named_parameters())
    changed = sum(int(not torch.equal(before[n], after[n].detach())) for n in before)
    assert changed > 0, "GRPO did not change any adapter weight"
    assert all(after[n].dtype == before[n].dtype for n in before)
    assert list(model.peft_config) == ["default"]

    # The kept SFT adapter is the pre-GRPO one (complete, naming its base), not the final one.
    saved = load_file(tmp_path / "sft" / "adapter_model.safetensors")
    assert saved.keys() == sft_state.keys()
    assert all(torch.equal(saved[k], sft_state[k]) for k in saved)
    final = get_peft_model_state_dict(model)
    assert any(not torch.equal(saved[k], final[k].detach()) for k in saved)
    cfg_json = json.loads((tmp_path / "sft" / "adapter_config.json").read_text())
    assert cfg_json["base_model_name_or_path"] == "embedded"
    assert (tmp_path / "sft" / "tokenizer_config.json").is_file()
