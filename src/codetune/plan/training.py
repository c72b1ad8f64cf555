"""The planner's view of a training job, read through the trainer's own config.

A job is planned from the :class:`codetune.train.config.TrainConfig` the job itself will
load (same file lookup, same overrides, same validation), so a setting the trainer refuses
is refused here too, with the trainer's message, and every knob has one name. The planner's
:class:`~codetune.plan.memory.Setup` keeps the formula's own inputs (``lora_rank=0`` for
full fine-tuning, a token cap per micro-batch): ``codetune plan`` sets them from its flags.
"""

from __future__ import annotations

from codetune.errors import ConfigError
from codetune.plan.arch import PlanError
from codetune.plan.memory import Setup, parse_targets
from codetune.train.config import TrainConfig, load_train_config


def load_training_config(config_name: str, overrides: dict | None = None) -> TrainConfig:
    """The job's TrainConfig (shipped config name or path + dotted overrides); PlanError
    carrying the trainer's message when the trainer would refuse it."""
    try:
        return load_train_config(config_name, overrides or {})
    except ConfigError as e:
        raise PlanError(str(e)) from e


def setup_from_config(cfg: TrainConfig, device: str = "gpu") -> Setup:
    """A planner :class:`Setup` from a loaded training config. 4-bit is NF4 with double
    quantization (the trainer's BitsAndBytesConfig); padding-free micro-batches are planned
    at their worst case, ``per_device_batch_size`` examples of ``max_seq_length`` tokens."""
    return Setup(
        seq_len=cfg.max_seq_length,
        micro_batch=cfg.per_device_batch_size,
        lora_rank=cfg.lora.rank,
        lora_targets=parse_targets(cfg.lora.target_modules),
        quantization=cfg.quantization,
        double_quant=True,
        grad_checkpointing=cfg.gradient_checkpointing,
        lora_dropout=cfg.lora.dropout > 0,
        device=device,
        eager_attention=cfg.attn_implementation == "eager",
    )
