"""QLoRA training (and the optional GRPO stage)."""
