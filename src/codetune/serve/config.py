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
ENV_SAGEMAKER_BATCH = "SAGEMAKER_BATCH"  # "true" when SageMaker runs the image for Batch Transform
# codetune's own knobs (all optional)
ENV_BASE_MODEL = "CODETUNE_BASE_MODEL"  # path, s3:// prefix or Hugging Face id
ENV_MODEL_DIR = "CODETUNE_MODEL_DIR"  # default: SageMakerPaths.from_env().model_dir
ENV_ADAPTER_NAME = "CODETUNE_ADAPTER_NAME"  # name of a single adapter found in the model dir
ENV_DEFAULT_MODEL = "CODETUNE_DEFAULT_MODEL"  # adapter (or base) for requests naming none
ENV_QUANTIZATION = "CODETUNE_QUANTIZATION"  # none | 4bit
ENV_ENGINE = "CODETUNE_ENGINE"  # auto | transformers | vllm
ENV_MAX_BATCH_SIZE = "CODETUNE_MAX_BATCH_SIZE"
ENV_QUEUE_SIZE = "CODETUNE_QUEUE_SIZE"
ENV_REQUEST_TIMEOUT = "CODETUNE_REQUEST_TIMEOUT_S"
ENV_MAX_NEW_TOKENS = "CODETUNE_MAX_NEW_TOKENS"
ENV_TORCH_THREADS = "CODETUNE_TORCH_THREADS"
ENV_DTYPE = "CODETUNE_DTYPE"  # auto | float32 | bfloat16 (transformers engine)
# vLLM engine knobs (0 / unset = derived from the model, adapters and GPUs; codetune.serve.vllm_args)
ENV_INSTANCE_TYPE = "CODETUNE_INSTANCE_TYPE"  # e.g. ml.g5.12xlarge; set by the deployment
ENV_MAX_LORAS = "CODETUNE_VLLM_MAX_LORAS"
ENV_MAX_LORA_RANK = "CODETUNE_VLLM_MAX_LORA_RANK"
ENV_GPU_MEMORY_UTILIZATION = "CODETUNE_VLLM_GPU_MEMORY_UTILIZATION"
ENV_TENSOR_PARALLEL = "CODETUNE_VLLM_TENSOR_PARALLEL_SIZE"
ENV_MAX_MODEL_LEN = "CODETUNE_VLLM_MAX_MODEL_LEN"
ENV_VLLM_DTYPE = "CODETUNE_VLLM_DTYPE"

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
    engine: str = field(
        default="auto",
        metadata={
            "help": "auto | transformers | vllm; auto = vllm when it is installed and a CUDA "
            "GPU is visible (the GPU image), else transformers (CPU)"
        },
    )
    quantization: str = field(
        default="none",
        metadata={"help": "none | 4bit (NF4 base weights; transformers engine, meant for GPUs)"},
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "transformers engine: auto | float32 | bfloat16; auto = bf16 on a GPU "
            "that has it and on a CPU that multiplies bf16 natively (AMX / AVX512-BF16, e.g. "
            "ml.c7i), else fp32"
        },
    )
    max_batch_size: int = field(
        default=0,
        metadata={
            "help": "most requests decoded together (0 = the engine's default: 16 for "
            "transformers, 256 for vllm)"
        },
    )
    queue_size: int = field(
        default=64,
        metadata={
            "help": "most requests waiting beyond those being decoded; more are answered 503 "
            "at once"
        },
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
    torch_threads: int = field(
        default=0,
        metadata={
            "help": "torch intra-op threads (0 = torch's default). On a CPU shared with other "
            "processes 1 is often several times faster: OpenMP threads spin-wait for each other"
        },
    )
    batch: bool = field(
        default=False,
        metadata={
            "help": "Batch Transform mode (on when SageMaker sets SAGEMAKER_BATCH=true): a "
            "request's error (4xx, 500, 504) is answered with status 200 and its "
            '{"error": ...} body, so that it becomes that record\'s output line instead of '
            "failing the whole job; streaming requests are refused (an answer is one line)"
        },
    )
    warmup: bool = field(
        default=True,
        metadata={"help": "run one generation before /ping turns healthy (leave on in prod)"},
    )
    # vLLM engine (each 0/None = derived; see codetune.serve.vllm_args)
    instance_type: str | None = field(
        default=None,
        metadata={"help": "SageMaker instance type (GPU count and memory when not detectable)"},
    )
    max_loras: int = field(
        default=0, metadata={"help": "vllm: adapters usable in one batch (0 = derived)"}
    )
    max_lora_rank: int = field(
        default=0,
        metadata={"help": "vllm: largest adapter rank servable (0 = from the adapters' r)"},
    )
    gpu_memory_utilization: float = field(
        default=0.0, metadata={"help": "vllm: fraction of GPU memory vLLM may use (0 = derived)"}
    )
    tensor_parallel_size: int = field(
        default=0, metadata={"help": "vllm: GPUs the model is sharded over (0 = all visible)"}
    )
    max_model_len: int = field(
        default=0,
        metadata={"help": "vllm: prompt + answer tokens (0 = the model's window, capped to fit)"},
    )
    vllm_dtype: str | None = field(
        default=None,
        metadata={"help": "vllm: auto | bfloat16 | float16 | float32 (None = derived)"},
    )
    vllm_kv_cache_bytes: int = field(
        default=0,
        metadata={
            "help": "vllm: KV cache size in bytes instead of gpu_memory_utilization (CPU "
            "builds and tests; 0 = off)"
        },
    )

    def validate(self) -> None:
        """Raise ConfigError naming the option that is out of range."""
        positive = ("queue_size", "max_new_tokens_cap", "default_max_new_tokens", "max_body_bytes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        derived = (
            "max_batch_size",
            "torch_threads",
            "max_loras",
            "max_lora_rank",
            "tensor_parallel_size",
            "max_model_len",
            "vllm_kv_cache_bytes",
        )
        for name in derived:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = derived), got {getattr(self, name)}")
        if not 0.0 <= self.gpu_memory_utilization < 1.0:
            raise ConfigError(
                f"gpu_memory_utilization must be in [0, 1) (0 = derived), got "
                f"{self.gpu_memory_utilization}"
            )
        from codetune.serve.engine import ENGINES

        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ConfigError(
                f"default_max_new_tokens ({self.default_max_new_tokens}) exceeds "
                f"max_new_tokens_cap ({self.max_new_tokens_cap})"
            )
        from codetune.generation import DTYPES

        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
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
            ENV_DEFAULT_MODEL: ("default_model", str),
            ENV_QUANTIZATION: ("quantization", str),
            ENV_ENGINE: ("engine", str),
            ENV_MAX_BATCH_SIZE: ("max_batch_size", int),
            ENV_QUEUE_SIZE: ("queue_size", int),
            ENV_REQUEST_TIMEOUT: ("request_timeout_s", float),
            ENV_MAX_NEW_TOKENS: ("max_new_tokens_cap", int),
            ENV_TORCH_THREADS: ("torch_threads", int),
            ENV_DTYPE: ("dtype", str),
            ENV_INSTANCE_TYPE: ("instance_type", str),
            ENV_MAX_LORAS: ("max_loras", int),
            ENV_MAX_LORA_RANK: ("max_lora_rank", int),
            ENV_GPU_MEMORY_UTILIZATION: ("gpu_memory_utilization", float),
            ENV_TENSOR_PARALLEL: ("tensor_parallel_size", int),
            ENV_MAX_MODEL_LEN: ("max_model_len", int),
            ENV_VLLM_DTYPE: ("vllm_dtype", str),
        }
        for var, (name, tp) in simple.items():
            if env.get(var):
                try:
                    values[name] = tp(env[var])
                except ValueError as e:
                    raise ConfigError(f"{var}={env[var]!r} is not a valid {tp.__name__}") from e
        if env.get(ENV_SAGEMAKER_BATCH):
            values["batch"] = env[ENV_SAGEMAKER_BATCH].strip().lower() == "true"
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
