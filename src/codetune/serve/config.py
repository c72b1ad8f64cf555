"""Server configuration and the environment variables the inference image reads.

Every environment variable name lives here (one place, as in sagemaker-inference-toolkit's
``parameters.py``). ``ServeConfig.from_env()`` is what the image's ``serve`` command uses;
``codetune serve`` builds the same dataclass from flags, a YAML file and ``--set`` overrides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from codetune.config import from_dict
from codetune.errors import ConfigError

# SageMaker's hosting contract
ENV_PORT = "SAGEMAKER_BIND_TO_PORT"  # SageMaker may ask for a port other than 8080
DEFAULT_PORT = 8080
# codetune's own knobs (all optional)
ENV_BASE_MODEL = "CODETUNE_BASE_MODEL"  # path, s3:// prefix or Hugging Face id
ENV_MODEL_DIR = "CODETUNE_MODEL_DIR"  # default: SageMakerPaths.from_env().model_dir
ENV_ADAPTER_NAME = "CODETUNE_ADAPTER_NAME"  # name of a single adapter found in the model dir
ENV_QUANTIZATION = "CODETUNE_QUANTIZATION"  # none | 4bit
ENV_MAX_BATCH_SIZE = "CODETUNE_MAX_BATCH_SIZE"
ENV_MAX_WAIT_MS = "CODETUNE_MAX_WAIT_MS"
ENV_QUEUE_SIZE = "CODETUNE_QUEUE_SIZE"
ENV_REQUEST_TIMEOUT = "CODETUNE_REQUEST_TIMEOUT_S"
ENV_MAX_NEW_TOKENS = "CODETUNE_MAX_NEW_TOKENS"
ENV_TORCH_THREADS = "CODETUNE_TORCH_THREADS"

BASE_ALIASES = ("base", "__base__")  # names that always mean "the base model, no adapter"


@dataclass
class ServeConfig:
    """Everything the inference server needs; defaults suit one GPU instance."""

    model_dir: str | None = field(
        default=None,
        metadata={
            "help": "SageMaker model directory scanned for adapters (adapters/<name>/, the "
            "directory itself, or model.tar.gz); default /opt/ml/model (CODETUNE_SM_ROOT)"
        },
    )
    adapters: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "explicit adapters name -> directory (skips the model_dir scan)"},
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "base model: directory, s3:// prefix or HF id; default = the base the "
            "adapter names, else the embedded model"
        },
    )
    adapter_name: str = field(
        default="adapter",
        metadata={"help": "name given to a single adapter that is the model dir itself"},
    )
    default_model: str | None = field(
        default=None,
        metadata={
            "help": "what answers when a request names no model; default: the only adapter "
            "when exactly one is loaded at start, else the base model"
        },
    )
    quantization: str = field(
        default="none", metadata={"help": "none | 4bit (NF4 base weights; meant for GPUs)"}
    )
    max_batch_size: int = field(
        default=16, metadata={"help": "most requests generated together in one batch"}
    )
    max_wait_ms: float = field(
        default=20.0,
        metadata={"help": "how long the worker waits for a batch to fill after the first request"},
    )
    queue_size: int = field(
        default=64,
        metadata={"help": "most requests waiting for the worker; more are answered 503 at once"},
    )
    request_timeout_s: float = field(
        default=120.0, metadata={"help": "a request not answered in this time gets 504"}
    )
    max_new_tokens_cap: int = field(
        default=1024, metadata={"help": "largest max_new_tokens / max_tokens a client may ask"}
    )
    default_max_new_tokens: int = field(
        default=256, metadata={"help": "max_new_tokens when the request does not say"}
    )
    max_body_bytes: int = field(
        default=1_048_576, metadata={"help": "larger request bodies are answered 413"}
    )
    max_stop_sequences: int = field(default=8, metadata={"help": "most stop sequences"})
    stream_chunk_tokens: int = field(
        default=8, metadata={"help": "tokens generated per streamed chunk"}
    )
    torch_threads: int = field(
        default=0,
        metadata={
            "help": "torch intra-op threads (0 = torch's default). On a CPU shared with other "
            "processes 1 is often several times faster: OpenMP threads spin-wait for each other"
        },
    )
    warmup: bool = field(
        default=True,
        metadata={"help": "run one generation before /ping turns healthy (leave on in prod)"},
    )

    def validate(self) -> None:
        """Raise ConfigError naming the option that is out of range."""
        positive = (
            "max_batch_size",
            "queue_size",
            "max_new_tokens_cap",
            "default_max_new_tokens",
            "max_body_bytes",
            "stream_chunk_tokens",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ConfigError(
                f"default_max_new_tokens ({self.default_max_new_tokens}) exceeds "
                f"max_new_tokens_cap ({self.max_new_tokens_cap})"
            )
        if self.quantization not in ("none", "4bit"):
            raise ConfigError(f"quantization must be none or 4bit, got {self.quantization!r}")
        for name in self.adapters:
            if name in BASE_ALIASES or not name or "/" in name:
                raise ConfigError(
                    f"adapter name {name!r} is reserved or invalid; use letters, digits, - or _"
                )

    @classmethod
    def from_env(cls, **overrides) -> ServeConfig:
        """Defaults ← ``CODETUNE_*`` environment variables ← ``overrides``; validated."""
        env = os.environ
        values: dict = {}
        simple = {
            ENV_BASE_MODEL: ("base_model", str),
            ENV_MODEL_DIR: ("model_dir", str),
            ENV_ADAPTER_NAME: ("adapter_name", str),
            ENV_QUANTIZATION: ("quantization", str),
            ENV_MAX_BATCH_SIZE: ("max_batch_size", int),
            ENV_MAX_WAIT_MS: ("max_wait_ms", float),
            ENV_QUEUE_SIZE: ("queue_size", int),
            ENV_REQUEST_TIMEOUT: ("request_timeout_s", float),
            ENV_MAX_NEW_TOKENS: ("max_new_tokens_cap", int),
            ENV_TORCH_THREADS: ("torch_threads", int),
        }
        for var, (name, tp) in simple.items():
            if env.get(var):
                try:
                    values[name] = tp(env[var])
                except ValueError as e:
                    raise ConfigError(f"{var}={env[var]!r} is not a valid {tp.__name__}") from e
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "max_new_tokens_cap" in values and "default_max_new_tokens" not in values:
            default = next(f.default for f in fields(cls) if f.name == "default_max_new_tokens")
            values["default_max_new_tokens"] = min(default, values["max_new_tokens_cap"])
        # from_dict type-checks, rejects unknown keys (listing known ones) and validates.
        return from_dict(cls, values, where="serve config")


def bind_port(explicit: int | None = None) -> int:
    """``explicit`` or ``$SAGEMAKER_BIND_TO_PORT`` or 8080."""
    if explicit:
        return explicit
    raw = os.environ.get(ENV_PORT)
    if raw:
        try:
            return int(raw)
        except ValueError as e:
            raise ConfigError(f"{ENV_PORT}={raw!r} is not a port number") from e
    return DEFAULT_PORT
