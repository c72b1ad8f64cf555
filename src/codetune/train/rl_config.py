"""The ``rl:`` section of a training config: optional GRPO stage after SFT (off by default).

Shared by the training config (``TrainConfig.rl``) and the run input (``training.rl``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codetune.errors import ConfigError

# With rl.enabled the trainer also keeps the SFT-only adapter (before GRPO) in this
# subdirectory of its output (so also inside model.tar.gz); the adapter at the top of the
# output is the final SFT+GRPO one that is evaluated as the candidate, registered and served.
SFT_ADAPTER_SUBDIR = "sft"

# Reward functions known to codetune.train.rewards (name -> default weight).
DEFAULT_REWARD_WEIGHTS = {"exact_fix": 1.0, "parses": 0.2, "format": 0.1, "length_penalty": 0.05}


@dataclass
class RLConfig:
    enabled: bool = field(default=False, metadata={"help": "run GRPO after SFT"})
    steps: int = field(default=20, metadata={"help": "GRPO optimizer steps"})
    generations: int = field(
        default=4, metadata={"help": "completions sampled per prompt (group size), 2..64"}
    )
    max_completion_length: int = field(default=256, metadata={"help": "token cap per completion"})
    kl_coef: float = field(default=0.04, metadata={"help": "KL penalty (beta), 0..1"})
    learning_rate: float = field(default=5e-6, metadata={"help": "GRPO learning rate"})
    temperature: float = field(
        default=0.8, metadata={"help": "sampling temperature for generations"}
    )
    prompts_per_step: int = field(
        default=2, metadata={"help": "distinct prompts per optimizer step"}
    )
    reward_weights: dict = field(
        default_factory=lambda: dict(DEFAULT_REWARD_WEIGHTS),
        metadata={"help": "reward name -> weight"},
    )

    def validate(self) -> None:
        """Raise ConfigError naming the option when a value is out of range."""
        if not 2 <= self.generations <= 64:
            raise ConfigError(
                f"rl.generations must be between 2 and 64 (GRPO needs a group), got {self.generations}"
            )
        if not 0.0 <= self.kl_coef <= 1.0:
            raise ConfigError(f"rl.kl_coef must be between 0 and 1, got {self.kl_coef}")
        if self.steps < 1:
            raise ConfigError(f"rl.steps must be >= 1, got {self.steps}")
        if self.max_completion_length < 8:
            raise ConfigError(
                f"rl.max_completion_length must be >= 8, got {self.max_completion_length}"
            )
        if self.prompts_per_step < 1:
            raise ConfigError(f"rl.prompts_per_step must be >= 1, got {self.prompts_per_step}")
        if not self.temperature > 0.0:
            raise ConfigError(f"rl.temperature must be > 0 (GRPO samples), got {self.temperature}")
        if not self.learning_rate > 0.0:
            raise ConfigError(f"rl.learning_rate must be > 0, got {self.learning_rate}")
        unknown = sorted(set(self.reward_weights) - set(DEFAULT_REWARD_WEIGHTS))
        if unknown:
            raise ConfigError(
                f"rl.reward_weights: unknown reward(s) {', '.join(unknown)}; "
                f"known: {', '.join(DEFAULT_REWARD_WEIGHTS)}"
            )
        # A reward left out of rl.reward_weights (or weighted 0) is not computed.
        for name, weight in self.reward_weights.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                raise ConfigError(
                    f"rl.reward_weights.{name} must be a number >= 0, got {weight!r} "
                    "(length_penalty is already negative; weights only scale)"
                )
        if not any(w > 0 for w in self.reward_weights.values()):
            raise ConfigError("rl.reward_weights must give at least one reward a weight > 0")
