"""The training config: a typed dataclass loaded from ``training_image/configs/<name>.yaml``
plus ``--set key=value`` overrides. Unknown keys fail; conflicting options fail at start-up
with the option named.

Config files are found in ``$CODETUNE_CONFIG_DIR`` (the training image sets it) or in the
``training_image/configs`` directory of the source tree. A bare name (``cpu-smollm2``) resolves
to ``<configs dir>/<name>.yaml``; anything with a slash or a ``.yaml`` suffix is a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from codetune.config import load_config
from codetune.errors import ConfigError
from codetune.train.rl_config import RLConfig

ENV_CONFIG_DIR = "CODETUNE_CONFIG_DIR"
DEFAULT_CONFIG = "cpu-smollm2"
QUANTIZATION = ("4bit", "8bit", "none")
BATCHING = ("padding_free", "padded")
OVERLONG = ("drop", "truncate")
DTYPES = ("auto", "bf16", "fp16", "fp32")
OPTIMIZERS = ("auto", "paged_adamw_8bit", "adamw_torch", "adamw_8bit")
DISTRIBUTED = ("ddp", "fsdp")


@dataclass
class LoraSection:
    rank: int = field(default=16, metadata={"help": "LoRA rank r"})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / rank)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "module names to adapt; ['all-linear'] = every linear but lm_head"},
    )

    def validate(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha < 1:
            raise ConfigError(f"lora.alpha must be >= 1, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one module (or all-linear)")


@dataclass
class TrainConfig:
    base_model: str = field(
        default="embedded",
        metadata={"help": "Hugging Face id, local directory, or 'embedded' (SmolLM2-135M)"},
    )
    quantization: str = field(
        default="4bit", metadata={"help": "4bit (QLoRA, NF4 + double quant) | 8bit | none"}
    )
    compute_dtype: str = field(
        default="auto",
        metadata={"help": "auto (bf16 where the GPU has it, else fp32) | bf16 | ..."},
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"}
    )
    lora: LoraSection = field(default_factory=LoraSection, metadata={"help": "LoRA adapter"})
    max_seq_length: int = field(
        default=512, metadata={"help": "hard cap on tokens per example (prompt + answer)"}
    )
    overlong: str = field(
        default="drop", metadata={"help": "examples over max_seq_length: drop | truncate"}
    )
    batching: str = field(
        default="padding_free",
        metadata={"help": "padding_free (flattened, position_ids) | padded (length-grouped)"},
    )
    per_device_batch_size: int = field(default=8, metadata={"help": "examples per micro-batch"})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "micro-batches per optimizer step"}
    )
    max_steps: int = field(default=36, metadata={"help": "optimizer steps"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name"})
    warmup_steps: int = field(default=2, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    optimizer: str = field(
        default="auto",
        metadata={"help": "auto (paged_adamw_8bit on CUDA, adamw_torch on CPU) | explicit name"},
    )
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "recompute activations in backward (less memory)"}
    )
    seed: int = field(default=42, metadata={"help": "random seed"})
    logging_steps: int = field(default=1, metadata={"help": "print a metric line every N steps"})
    save_steps: int = field(default=10, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    eval_max_examples: int = field(
        default=64, metadata={"help": "validation examples scored (0 = all)"}
    )
    eval_batch_size: int = field(default=8, metadata={"help": "examples per eval micro-batch"})
    distributed: str = field(
        default="ddp", metadata={"help": "ddp | fsdp (for models that do not fit one GPU)"}
    )
    merge: bool = field(
        default=False, metadata={"help": "also write a merged full model to <out>/merged"}
    )
    rl: RLConfig = field(default_factory=RLConfig, metadata={"help": "optional GRPO after SFT"})

    def validate(self) -> None:
        """Raise ConfigError naming the option when a value is invalid or options conflict."""
        q = self.quantization.replace(" ", "").lower()
        if "4bit" in q and "8bit" in q:
            raise ConfigError(
                f"quantization={self.quantization!r}: 4-bit and 8-bit cannot both be set; "
                "choose one of 4bit, 8bit, none"
            )
        _one_of("quantization", self.quantization, QUANTIZATION)
        _one_of("compute_dtype", self.compute_dtype, DTYPES)
        _one_of("batching", self.batching, BATCHING)
        _one_of("overlong", self.overlong, OVERLONG)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("distributed", self.distributed, DISTRIBUTED)
        for name in (
            "max_seq_length",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "max_steps",
            "logging_steps",
            "save_steps",
            "save_total_limit",
            "eval_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_seq_length < 32:
            raise ConfigError(f"max_seq_length must be >= 32, got {self.max_seq_length}")
        if not 0.0 < self.learning_rate < 1.0:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.warmup_steps < 0 or self.eval_max_examples < 0:
            raise ConfigError("warmup_steps and eval_max_examples must be >= 0")
        if self.distributed == "fsdp" and self.quantization == "8bit":
            raise ConfigError(
                "distributed=fsdp does not support quantization=8bit; use 4bit (QLoRA) or none"
            )


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: choose one of {', '.join(allowed)}")


def configs_dir() -> Path:
    """Where shipped configs live: ``$CODETUNE_CONFIG_DIR``, else the source tree's copy."""
    env = os.environ.get(ENV_CONFIG_DIR)
    if env:
        return Path(env)
    # src/codetune/train/config.py -> repo root is parents[3]
    return Path(__file__).resolve().parents[3] / "training_image" / "configs"


def shipped_configs() -> list[str]:
    """Names of the configs in :func:`configs_dir` (sorted)."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def resolve_config_path(path_or_name: str | Path | None) -> Path:
    """A config name or path -> an existing YAML file; raises ConfigError naming the config."""
    spec = str(path_or_name) if path_or_name else DEFAULT_CONFIG
    p = Path(spec).expanduser()
    if "/" in spec or spec.endswith((".yaml", ".yml")):
        if not p.is_file():
            raise ConfigError(f"--config {spec}: no such file")
        return p
    candidate = configs_dir() / f"{spec}.yaml"
    if not candidate.is_file():
        known = ", ".join(shipped_configs()) or "none found"
        raise ConfigError(
            f"--config {spec}: no config of that name in {configs_dir()} (shipped: {known})"
        )
    return candidate


def load_train_config(
    path_or_name: str | Path | None = None, overrides: list[str] | dict | None = None
) -> TrainConfig:
    """Load a :class:`TrainConfig` from a shipped config name or a YAML path, then apply
    overrides (``["lora.rank=32"]`` or ``{"lora.rank": 32}``). Raises ConfigError."""
    if isinstance(overrides, dict):
        import json

        overrides = [f"{k}={json.dumps(v)}" for k, v in sorted(overrides.items())]
    return load_config(TrainConfig, resolve_config_path(path_or_name), list(overrides or []))
