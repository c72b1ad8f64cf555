"""vLLM engine settings derived from the model, the adapters and the GPUs (each overridable
through ``ServeConfig``). Pure functions: nothing here imports vLLM or touches a GPU, so the
rules are tested without either, and the deployment can use the same table.

=====================  ===================================================================
vLLM argument          derived as (``ServeConfig`` field that overrides it)
=====================  ===================================================================
tensor_parallel_size   visible GPUs (or the instance type's), lowered to a divisor of the
                       model's attention heads (``tensor_parallel_size``)
dtype                  bfloat16 where the GPU has it, float16 on older GPUs (T4, V100),
                       float32 without a GPU (``vllm_dtype``)
max_lora_rank          smallest rank vLLM supports that fits the largest adapter ``r`` and
                       codetune's training default (adapters registered later must fit)
                       (``max_lora_rank``)
max_loras              adapters in one batch: the adapters at start, at least 4
                       (``max_loras``); adapters beyond it wait in vLLM's CPU cache
gpu_memory_utilization 0.90, vLLM's default (``gpu_memory_utilization``)
max_model_len          the model's context window, capped to what the KV cache left by the
                       weights can hold (``max_model_len``)
max_num_seqs           256, vLLM's default (``max_batch_size``)
=====================  ===================================================================
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import ConfigError

# The ranks vLLM accepts for max_lora_rank (vllm.config.lora.MaxLoRARanks, 0.32).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
TRAINING_DEFAULT_RANK = 16  # codetune.train.config: LoRA rank r
MIN_MAX_LORAS = 4
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
DEFAULT_MAX_NUM_SEQS = 256
# Memory vLLM needs per GPU besides weights and KV cache (activations, CUDA graphs, LoRA
# buffers, the CUDA context): a conservative round figure for the max_model_len cap.
RUNTIME_OVERHEAD_GIB = 2.0
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Gpus:
    """The GPUs one server sees."""

    count: int
    memory_gib: float  # per GPU
    bf16: bool
    name: str = ""


def _g(n: int, gib: float, bf16: bool, name: str) -> Gpus:
    return Gpus(n, gib, bf16, name)


T4, A10G, L4, L40S = (16, False, "T4"), (24, True, "A10G"), (24, True, "L4"), (48, True, "L40S")
V100, A100, A100_80, H100, H200 = (
    (16, False, "V100"),
    (40, True, "A100"),
    (80, True, "A100-80GB"),
    (80, True, "H100"),
    (141, True, "H200"),
)
# SageMaker GPU instance types: GPU count, memory per GPU, bf16 support.
INSTANCE_GPUS: dict[str, Gpus] = {
    **{f"ml.g4dn.{s}": _g(1, *T4) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g4dn.12xlarge": _g(4, *T4),
    **{f"ml.g5.{s}": _g(1, *A10G) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g5.12xlarge": _g(4, *A10G),
    "ml.g5.24xlarge": _g(4, *A10G),
    "ml.g5.48xlarge": _g(8, *A10G),
    **{f"ml.g6.{s}": _g(1, *L4) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g6.12xlarge": _g(4, *L4),
    "ml.g6.24xlarge": _g(4, *L4),
    "ml.g6.48xlarge": _g(8, *L4),
    **{
        f"ml.g6e.{s}": _g(1, *L40S) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
    },
    "ml.g6e.12xlarge": _g(4, *L40S),
    "ml.g6e.24xlarge": _g(4, *L40S),
    "ml.g6e.48xlarge": _g(8, *L40S),
    "ml.p3.2xlarge": _g(1, *V100),
    "ml.p3.8xlarge": _g(4, *V100),
    "ml.p3.16xlarge": _g(8, *V100),
    "ml.p4d.24xlarge": _g(8, *A100),
    "ml.p4de.24xlarge": _g(8, *A100_80),
    "ml.p5.48xlarge": _g(8, *H100),
    "ml.p5e.48xlarge": _g(8, *H200),
    "ml.p5en.48xlarge": _g(8, *H200),
}


def gpus_for_instance(instance_type: str | None) -> Gpus | None:
    """The GPUs of a SageMaker instance type; None for a CPU type or None.

    Raises ConfigError for an ``ml.g*``/``ml.p*`` type not in :data:`INSTANCE_GPUS`."""
    if not instance_type:
        return None
    if instance_type in INSTANCE_GPUS:
        return INSTANCE_GPUS[instance_type]
    if instance_type.startswith(("ml.g", "ml.p")):
        raise ConfigError(
            f"instance_type {instance_type!r}: GPU count and memory unknown to codetune; set "
            "tensor_parallel_size and max_model_len explicitly, or add it to INSTANCE_GPUS"
        )
    return None


def detect_gpus() -> Gpus | None:
    """The CUDA GPUs this process sees (None without CUDA)."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return None
    props = torch.cuda.get_device_properties(0)
    return Gpus(
        count=torch.cuda.device_count(),
        memory_gib=props.total_memory / 2**30,
        bf16=torch.cuda.is_bf16_supported(),
        name=props.name,
    )


@dataclass(frozen=True)
class ModelFacts:
    """What the derivation needs to know about a base model."""

    params: int  # parameter count (from the safetensors headers)
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    context_window: int

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]


def model_facts(model_dir: str | Path) -> ModelFacts:
    """Read ``config.json`` and the safetensors headers (not the weights) of a local model.

    Raises ConfigError when the directory has no config.json or no safetensors files."""
    d = Path(model_dir)
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{d} has no config.json: not a Hugging Face model directory")
    cfg = json.loads(cfg_file.read_text())
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    params = 0
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{d} has no *.safetensors weights")
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        params += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return ModelFacts(
        params=params,
        layers=int(cfg["num_hidden_layers"]),
        attention_heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        context_window=int(cfg.get("max_position_embeddings") or 2048),
    )


def adapter_rank(adapter_dir: str | Path) -> int:
    """The largest LoRA rank in a PEFT adapter (``r`` and any ``rank_pattern`` entry)."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    return max(
        [int(cfg.get("r") or 0), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    )


def lora_rank_slot(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank``; ConfigError above its maximum."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise ConfigError(f"LoRA rank {rank} is above vLLM's maximum {LORA_RANKS[-1]}")


def engine_args(
    config,
    facts: ModelFacts | None,
    adapter_ranks: list[int],
    gpus: Gpus | None,
) -> dict:
    """Keyword arguments for ``vllm.AsyncEngineArgs`` (beside ``model``). ``config`` is a
    ServeConfig; its non-zero vLLM fields win over the derived values.

    Raises ConfigError naming the option when the model cannot fit (e.g. the weights alone
    exceed the GPU memory vLLM may use) or an override is impossible."""
    if config.quantization != "none":
        raise ConfigError(
            f"quantization={config.quantization!r} is the transformers engine's (bitsandbytes "
            "NF4); the vllm engine serves the base in bf16/fp16: set quantization=none or "
            "engine=transformers"
        )
    dtype = config.vllm_dtype or (
        "float32" if gpus is None else "bfloat16" if gpus.bf16 else "float16"
    )
    if dtype not in DTYPE_BYTES and dtype != "auto":
        raise ConfigError(f"vllm_dtype must be auto, {', '.join(DTYPE_BYTES)}; got {dtype!r}")
    tp = config.tensor_parallel_size or (gpus.count if gpus else 1)
    if facts is not None:
        if config.tensor_parallel_size and facts.attention_heads % tp:
            raise ConfigError(
                f"tensor_parallel_size={tp} does not divide the model's "
                f"{facts.attention_heads} attention heads"
            )
        while facts.attention_heads % tp:
            tp -= 1
    rank = config.max_lora_rank or lora_rank_slot(max([TRAINING_DEFAULT_RANK, *adapter_ranks]))
    if config.max_lora_rank and config.max_lora_rank not in LORA_RANKS:
        raise ConfigError(f"max_lora_rank must be one of {LORA_RANKS}, got {config.max_lora_rank}")
    if adapter_ranks and max(adapter_ranks) > rank:
        raise ConfigError(
            f"an adapter has rank {max(adapter_ranks)} but max_lora_rank={rank}; raise max_lora_rank"
        )
    max_loras = config.max_loras or max(MIN_MAX_LORAS, len(adapter_ranks))
    util = config.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
    args: dict = {
        "dtype": dtype,
        "tensor_parallel_size": tp,
        "enable_lora": True,  # adapters can be registered at any time (inference components)
        "max_lora_rank": rank,
        "max_loras": max_loras,
        "max_cpu_loras": max(2 * max_loras, len(adapter_ranks)),
        "max_num_seqs": config.max_batch_size or DEFAULT_MAX_NUM_SEQS,
    }
    if config.vllm_kv_cache_bytes:
        args["kv_cache_memory_bytes"] = config.vllm_kv_cache_bytes
    else:
        args["gpu_memory_utilization"] = util
    max_len = config.max_model_len or (facts.context_window if facts else 0)
    if facts is not None and not config.max_model_len and dtype != "auto":
        kv_bytes = _kv_budget(config, facts, gpus, dtype, util)
        if kv_bytes is not None:
            fits = int(kv_bytes // facts.kv_bytes_per_token(dtype))
            if fits < max_len:  # vLLM refuses to start unless one whole sequence fits
                max_len = fits // 256 * 256
                if max_len == 0:
                    raise ConfigError(
                        f"the KV cache left beside the weights holds {fits} tokens, not one "
                        "sequence: use more GPU memory (gpu_memory_utilization, instance type) "
                        "or a larger vllm_kv_cache_bytes"
                    )
    if max_len:
        if max_len < config.max_new_tokens_cap + 1:
            raise ConfigError(
                f"max_model_len {max_len} leaves no room for a prompt beside max_new_tokens_cap "
                f"{config.max_new_tokens_cap}; lower max_new_tokens_cap or use more GPU memory"
            )
        args["max_model_len"] = max_len
    return args


def _kv_budget(config, facts: ModelFacts, gpus: Gpus | None, dtype: str, util: float):
    """Bytes left for the KV cache (None when unknown: no GPU and no explicit size)."""
    if config.vllm_kv_cache_bytes:
        return config.vllm_kv_cache_bytes
    if gpus is None:
        return None
    budget = gpus.count * (gpus.memory_gib * util - RUNTIME_OVERHEAD_GIB) * 2**30
    free = budget - facts.params * DTYPE_BYTES[dtype]
    if free <= 0:
        raise ConfigError(
            f"the model's weights ({facts.params * DTYPE_BYTES[dtype] / 2**30:.1f} GiB in "
            f"{dtype}) do not fit in {util:.2f} of {gpus.count} x {gpus.memory_gib:.0f} GiB "
            f"({gpus.name}); use an instance type with more GPU memory or raise "
            "gpu_memory_utilization"
        )
    return free
