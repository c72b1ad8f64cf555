"""The memory formula: peak memory of one training process (one GPU, or the CPU).

Everything is in bytes internally and reported in GB = 10**9 bytes (the seeds' convention:
"1B parameters at fp32 = 4 GB"). ``docs/planner.md`` explains each term; the constants here
are the ones it quotes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from codetune.plan.arch import ALL_TARGETS, ATTN_TARGETS, Architecture, PlanError

GB = 1e9
# NF4 with double quantization (QLoRA paper, section 3): 4 bits per weight + 8-bit absmax
# per block of 64 + fp32 second-level constant per 256 blocks = 4 + 8/64 + 32/(64*256) bits.
NF4_DQ_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 0.5159
NF4_BYTES = (4 + 32 / 64) / 8  # 0.5625: fp32 absmax per block of 64, no double quant
INT8_BYTES = 1.0  # LLM.int8: int8 weights (+ one fp32 scale per row, added per matrix below)
ADAPTER_BYTES = 4  # PEFT keeps LoRA weights in fp32 (autocast_adapter_dtype=True)
ADAM_STATE_BYTES = 8  # AdamW: exp_avg + exp_avg_sq in fp32
# CUDA context + cuBLAS workspace + allocator reserve that never shows in tensors.
CUDA_OVERHEAD_GB = 1.0
# Activation elements autograd saves per token per block without checkpointing, LLaMA block
# with SDPA attention and LoRA: 10 x hidden (norm inputs/outputs, rotated q, repeated k/v,
# attention output, o_proj input, residuals), 2 x kv width (k and v before repeat_kv) and
# 4 x intermediate (gate, up, silu(gate), product). Counted on the embedded model with
# torch.autograd.graph.saved_tensors_hooks (docs/planner.md); LoRA dropout adds one copy of
# each adapted matrix's input on top.
ACT_HIDDEN_ELEMS = 10
ACT_KV_ELEMS = 2
ACT_INTER_ELEMS = 4
# Logits: the lm_head output + the fp32 log-softmax kept for backward + the two fp32
# gradients alive at the start of backward (bf16 on GPU adds one fp32 upcast copy).
LOGIT_FP32_COPIES = 3
# Allocator overhead on activation memory: RSS (CPU, glibc heap) or reserved memory (GPU,
# PyTorch caching allocator) exceeds the live tensors. CPU factor measured on the embedded
# model (benchmarks/RESULTS.md, planner section: 1.26-1.46); GPU factor assumed, not measured.
ALLOCATOR_FACTOR = {"cpu": 1.35, "gpu": 1.2}

QUANTIZATIONS = ("4bit", "8bit", "none")
DEVICES = ("gpu", "cpu")


@dataclass(frozen=True)
class Setup:
    """What is trained and how (the planner's view of a training config)."""

    seq_len: int = 1024
    micro_batch: int = 1
    lora_rank: int = 16  # 0: full fine-tuning (every parameter trainable)
    lora_targets: tuple[str, ...] = ALL_TARGETS
    quantization: str = "4bit"
    double_quant: bool = True
    grad_checkpointing: bool = True
    lora_dropout: bool = True  # dropout > 0 keeps one masked copy of each adapted input
    device: str = "gpu"  # gpu: bf16 compute + CUDA context; cpu: fp32 compute, no context
    eager_attention: bool = False  # True: the s x s score matrix is materialised
    max_tokens: int = 0  # cap on tokens per micro-batch (packing/padding-free); 0 = none

    def __post_init__(self) -> None:
        for f in ("seq_len", "micro_batch"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise PlanError(f"{f.replace('_', ' ')} must be a positive integer, got {v!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise PlanError(f"max tokens must be an integer, got {self.max_tokens!r}")
        if self.max_tokens < 0:
            raise PlanError(f"max tokens must be >= 0 (0 = no cap), got {self.max_tokens}")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int):
            raise PlanError(f"lora rank must be an integer, got {self.lora_rank!r}")
        if self.lora_rank < 0:
            raise PlanError(f"lora rank must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")
        if self.quantization not in QUANTIZATIONS:
            raise PlanError(
                f"quantization {self.quantization!r} is not one of {', '.join(QUANTIZATIONS)}"
            )
        if self.lora_rank == 0 and self.quantization != "none":
            raise PlanError(
                "full fine-tuning (lora rank 0) needs quantization none: quantized weights "
                "cannot be trained"
            )
        if self.device not in DEVICES:
            raise PlanError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        unknown = sorted(set(self.lora_targets) - set(ALL_TARGETS))
        if unknown or not self.lora_targets:
            raise PlanError(
                f"lora targets {list(self.lora_targets)}: use all-linear, attn, or names from "
                f"{', '.join(ALL_TARGETS)}"
            )

    @property
    def compute_bytes(self) -> int:
        return 2 if self.device == "gpu" else 4

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch at worst (every example max length, unless capped)."""
        full = self.seq_len * self.micro_batch
        return min(full, max(self.max_tokens, self.seq_len)) if self.max_tokens else full


def parse_targets(value) -> tuple[str, ...]:
    """``all-linear`` | ``attn`` | a list/comma string of module names -> module names."""
    if value in (None, "all-linear", "all_linear", "all"):
        return ALL_TARGETS
    if value in ("attn", "attention"):
        return ATTN_TARGETS
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    shorthand = ("all-linear", "all_linear", "attn", "attention")
    if isinstance(value, list | tuple) and len(value) == 1 and value[0] in shorthand:
        return parse_targets(value[0])  # PEFT-style ["all-linear"] in training configs
    if not isinstance(value, list | tuple):
        raise PlanError(f"lora targets {value!r}: use all-linear, attn, or a list of module names")
    return tuple(value)


@dataclass
class Breakdown:
    """Peak memory of one training process, in GB, by component."""

    weights: float
    lora: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    trainable_params: int = field(default=0)

    @property
    def total(self) -> float:
        return (
            self.weights
            + self.lora
            + self.gradients
            + self.optimizer
            + self.activations
            + self.overhead
        )

    def as_dict(self, digits: int = 3) -> dict[str, float]:
        """The ``memory_gb`` object of ``codetune plan --json``."""
        d = {k: v for k, v in asdict(self).items() if k != "trainable_params"}
        d["total"] = self.total
        return {k: round(v, digits) for k, v in d.items()}


def lora_params(arch: Architecture, setup: Setup) -> int:
    """LoRA parameters: r * (d_in + d_out) per adapted matrix (A is r x d_in, B is d_out x r)."""
    mats = arch.matrices()
    return arch.layers * sum(setup.lora_rank * sum(mats[t]) for t in setup.lora_targets)


def weight_bytes(arch: Architecture, setup: Setup) -> float:
    """Frozen (or, for full fine-tuning, fp32 master) weights."""
    if setup.lora_rank == 0:
        return 4.0 * arch.params  # mixed precision keeps fp32 master weights
    c = setup.compute_bytes
    if setup.quantization == "4bit":
        per = NF4_DQ_BYTES if setup.double_quant else NF4_BYTES
        linear = arch.linear_params * per
    elif setup.quantization == "8bit":
        rows = arch.layers * sum(o for _, o in arch.matrices().values())
        linear = arch.linear_params * INT8_BYTES + rows * 4
    else:
        linear = arch.linear_params * c
    # Embeddings, LM head and norms stay in the compute dtype (16-bit on GPU).
    return linear + arch.other_params * c


def activation_bytes(arch: Architecture, setup: Setup) -> float:
    """Activations kept for backward at the peak, plus the logits of the loss."""
    c, t = setup.compute_bytes, setup.tokens
    kv_width = arch.kv_heads * arch.head_dim
    elems = ACT_HIDDEN_ELEMS * arch.hidden + ACT_KV_ELEMS * kv_width
    elems += ACT_INTER_ELEMS * arch.intermediate
    if setup.lora_rank and setup.lora_dropout:
        mats = arch.matrices()
        # one dropout output per adapted matrix input (PEFT applies dropout per module)
        elems += sum(mats[m][0] for m in setup.lora_targets)
    per_layer = t * c * elems
    if c < 4:
        # RMSNorm upcasts its input to fp32 and keeps it for backward (2 norms per block)
        per_layer += t * 2 * arch.hidden * 4
    if setup.eager_attention:
        # scores + softmax output, per head, s x s per sequence
        per_layer += setup.micro_batch * arch.heads * setup.seq_len**2 * 2 * c
    if setup.grad_checkpointing:
        # block inputs are kept; one block is recomputed at a time during backward
        blocks = arch.layers * t * arch.hidden * c + per_layer
    else:
        blocks = arch.layers * per_layer
    logits = t * arch.vocab * (c + 4 * LOGIT_FP32_COPIES)
    return (blocks + logits) * ALLOCATOR_FACTOR[setup.device]


def estimate(arch: Architecture, setup: Setup) -> Breakdown:
    """Peak memory of one training process for ``arch`` trained as ``setup``."""
    if setup.lora_rank == 0:
        trainable = arch.params
        lora = 0.0
        grads = trainable * 4.0
    else:
        trainable = lora_params(arch, setup)
        lora = trainable * ADAPTER_BYTES
        grads = trainable * ADAPTER_BYTES
    optimizer = trainable * ADAM_STATE_BYTES
    overhead = CUDA_OVERHEAD_GB * GB if setup.device == "gpu" else 0.0
    return Breakdown(
        weights=weight_bytes(arch, setup) / GB,
        lora=lora / GB,
        gradients=grads / GB,
        optimizer=optimizer / GB,
        activations=activation_bytes(arch, setup) / GB,
        overhead=overhead / GB,
        trainable_params=trainable,
    )


def seed_inference_gb(params: float, bytes_per_param: float) -> float:
    """The seeds' rule: weights = parameters x bytes per parameter (70B x 4 = 280 GB)."""
    return params * bytes_per_param / GB


def seed_full_finetune_gb(params: float, bytes_per_param: float = 4) -> float:
    """The seeds' rule of thumb: full fine-tuning needs ~6x the weights (4 GB x 6 = 24 GB)."""
    return 6 * seed_inference_gb(params, bytes_per_param)
