"""Planner API used by the workflow (recommend_instance / check_instance)."""

from __future__ import annotations

import pytest

from codetune.plan import PlanError, check_instance, recommend_instance

CONFIG = """
base_model: embedded
max_seq_length: 1024
per_device_batch_size: 1
lora: {rank: 16, target_modules: all-linear}
quantization: 4bit
gradient_checkpointing: true
"""


@pytest.fixture
def configs(tmp_path, monkeypatch):
    (tmp_path / "qlora.yaml").write_text(CONFIG)
    monkeypatch.setenv("CODETUNE_CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_recommend_returns_full_instance_name(configs):
    # Guards the contract: a full SageMaker name, the cheapest that fits (T4 for 8B QLoRA).
    assert recommend_instance("meta-llama/Llama-3.1-8B", "qlora", {}) == "ml.g4dn.xlarge"


def test_overrides_in_hyperparameter_encoding_are_applied(configs):
    # Guards: dotted overrides change the answer (70B unquantized does not fit one GPU).
    with pytest.raises(PlanError, match="GB per GPU"):
        recommend_instance(
            "meta-llama/Llama-3.1-70B",
            "qlora",
            {"lora.rank": 64, "quantization": "none", "gradient_checkpointing": False},
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora.rank": 0}, "lora.rank must be >= 1, got 0"),
        ({"lora.r": 8}, "unknown key(s) r;"),
        ({"training.max_seq_length": 512}, "unknown key(s) training;"),
        ({"max_tokens_per_batch": 4096}, "unknown key(s) max_tokens_per_batch;"),
    ],
)
def test_planner_refuses_what_the_trainer_refuses(configs, overrides, message):
    # Guards one name per knob: the planner reads the trainer's TrainConfig, so a value or
    # an alias the trainer refuses is refused here with the trainer's own message, instead of
    # being planned (lora.rank 0 used to plan as full fine-tuning and fail in the job).
    from codetune.errors import ConfigError
    from codetune.train.config import load_train_config

    with pytest.raises(ConfigError) as trainer:
        load_train_config(str(configs / "qlora.yaml"), overrides)
    assert message in str(trainer.value)
    with pytest.raises(PlanError) as planner:
        recommend_instance("embedded", "qlora", overrides)
    assert str(planner.value) == str(trainer.value)


def test_check_instance_refuses_with_numbers(configs):
    # Guards: an instance too small is refused, naming needed and available GB.
    with pytest.raises(PlanError, match=r"needs \d+\.\d GB per GPU .* ml\.g5\.xlarge has"):
        check_instance("ml.g5.xlarge", "meta-llama/Llama-3.1-70B", "qlora", {})
    assert check_instance("ml.p4de.24xlarge", "meta-llama/Llama-3.1-70B", "qlora", {}) is None


def test_unknown_config_and_instance(configs):
    # Guards: bad names are user errors that list what is known.
    with pytest.raises(PlanError, match="shipped: qlora"):
        recommend_instance("embedded", "nope", {})
    with pytest.raises(PlanError, match="not in the planner's table"):
        check_instance("ml.x9.huge", "embedded", "qlora", {})


def test_shipped_training_configs_plan_with_their_real_keys():
    # Guards alignment with training_image/configs: the 10 GB config is planned from its own
    # keys (base_model, max_seq_length 2048, batch 1, lora.target_modules [all-linear]) and fits.
    from codetune.plan import make_plan, setup_for

    arch, setup = setup_for(None, "gpu-10gb-stable-code-3b", {})
    assert arch.name == "stabilityai/stable-code-3b"
    assert (setup.seq_len, setup.micro_batch, setup.lora_rank) == (2048, 1, 16)
    assert len(setup.lora_targets) == 7 and setup.grad_checkpointing
    assert make_plan(arch, setup).memory.total < 10
    assert recommend_instance(None, "cpu-smollm2", {}) == "ml.g4dn.xlarge"
