"""codetune: fine-tune a code LLM with QLoRA on your own codebase, evaluate it with executed
tests, and serve base model + adapter on SageMaker (or on this machine)."""

__version__ = "0.1.0"
