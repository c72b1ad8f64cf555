"""Model architecture as the planner needs it: sizes only, never weights.

An :class:`Architecture` comes from (in this order) the known-models table
(``models.yaml``, so common Hub ids plan offline), a local directory or file holding a
Hugging Face ``config.json``, or explicit numbers (``--params --layers --hidden ...``).
The planner assumes a decoder-only transformer with a gated (SwiGLU) MLP — LLaMA, Qwen2,
StableLM, Mistral — which covers the code models codetune targets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from codetune.errors import CodetuneError

MODELS_FILE = Path(__file__).with_name("models.yaml")

# The linear layers of one decoder block, as PEFT names them.
ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ALL_TARGETS = ATTN_TARGETS + MLP_TARGETS


class PlanError(CodetuneError):
    """The planner cannot answer (bad input) or the configuration cannot fit."""


@dataclass(frozen=True)
class Architecture:
    """Sizes of a decoder-only transformer (gated MLP)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    vocab: int
    intermediate: int
    tie_embeddings: bool = True
    qkv_bias: bool = False
    head_dim: int = 0  # 0: hidden // heads

    def __post_init__(self) -> None:
        for f in ("layers", "hidden", "heads", "kv_heads", "vocab", "intermediate"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise PlanError(f"model {self.name}: {f} must be a positive integer, got {v!r}")
        if self.heads % self.kv_heads:
            raise PlanError(
                f"model {self.name}: heads ({self.heads}) must be a multiple of kv_heads "
                f"({self.kv_heads})"
            )
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)

    def matrices(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear layer of one block, by PEFT module name."""
        h, d = self.hidden, self.head_dim
        return {
            "q_proj": (h, self.heads * d),
            "k_proj": (h, self.kv_heads * d),
            "v_proj": (h, self.kv_heads * d),
            "o_proj": (self.heads * d, h),
            "gate_proj": (h, self.intermediate),
            "up_proj": (h, self.intermediate),
            "down_proj": (self.intermediate, h),
        }

    @property
    def linear_params(self) -> int:
        """Parameters in the blocks' linear layers (the ones 4-bit quantization shrinks)."""
        return self.layers * sum(i * o for i, o in self.matrices().values())

    @property
    def other_params(self) -> int:
        """Embeddings, LM head (when untied), norms and biases: kept in 16-bit under QLoRA."""
        embed = self.vocab * self.hidden * (1 if self.tie_embeddings else 2)
        norms = self.layers * 2 * self.hidden + self.hidden
        bias = (
            self.layers * (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        )
        return embed + norms + bias

    @property
    def params(self) -> int:
        """Total parameter count."""
        return self.linear_params + self.other_params


def from_hf_config(cfg: dict, name: str) -> Architecture:
    """Build an :class:`Architecture` from a Hugging Face ``config.json`` mapping.

    Raises PlanError naming the missing fields."""
    cfg = cfg.get("text_config", cfg) if "num_hidden_layers" not in cfg else cfg
    keys = {
        "layers": "num_hidden_layers",
        "hidden": "hidden_size",
        "heads": "num_attention_heads",
        "vocab": "vocab_size",
        "intermediate": "intermediate_size",
    }
    missing = [hf for hf in keys.values() if cfg.get(hf) is None]
    if missing:
        raise PlanError(
            f"model {name}: config.json lacks {', '.join(missing)}; give the architecture "
            "explicitly (--params --layers --hidden --heads --kv-heads --vocab)"
        )
    vals = {k: cfg[hf] for k, hf in keys.items()}
    return Architecture(
        name=name,
        kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=bool(cfg.get("attention_bias") or cfg.get("model_type") == "qwen2"),
        head_dim=int(cfg.get("head_dim") or 0),
        **vals,
    )


@lru_cache(maxsize=1)
def known_models() -> dict[str, dict]:
    """Known-model table: every id and alias (lower case) -> fields, from ``models.yaml``."""
    data = yaml.safe_load(MODELS_FILE.read_text(encoding="utf-8"))["models"]
    table: dict[str, dict] = {}
    for model_id, fields in data.items():
        fields = dict(fields)
        aliases = fields.pop("aliases", [])
        for n in [model_id, *aliases]:
            table[n.lower()] = {"name": model_id, **fields}
    return table


def from_numbers(
    *,
    params: int | None,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    vocab: int,
    intermediate: int | None = None,
    tie_embeddings: bool = False,
    name: str = "custom",
) -> Architecture:
    """Architecture from explicit sizes. Without ``intermediate``, the MLP width is derived
    from ``params`` (what remains after attention, embeddings and norms)."""
    for f, v in (
        ("layers", layers),
        ("hidden", hidden),
        ("heads", heads),
        ("kv_heads", kv_heads),
        ("vocab", vocab),
    ):
        if v is None or v <= 0:
            raise PlanError(f"--{f.replace('_', '-')} must be a positive integer, got {v!r}")
    if intermediate is None:
        if params is None or params <= 0:
            raise PlanError("--params must be a positive number (e.g. 7e9) when sizes are given")
        probe = Architecture(name, layers, hidden, heads, kv_heads, vocab, 1, tie_embeddings)
        attn = sum(i * o for k, (i, o) in probe.matrices().items() if k in ATTN_TARGETS)
        rest = params - probe.other_params - layers * attn
        intermediate = round(rest / (layers * 3 * hidden))
        if intermediate <= 0:
            raise PlanError(
                f"--params {params:.3g} is too small for {layers} layers of hidden size {hidden} "
                f"and a vocabulary of {vocab} (embeddings and attention alone need "
                f"{probe.other_params + layers * attn:.3g})"
            )
    return Architecture(name, layers, hidden, heads, kv_heads, vocab, intermediate, tie_embeddings)


def resolve_architecture(spec: str | None) -> Architecture:
    """Architecture of ``spec``: a known Hub id or alias, ``None``/``embedded``, a local
    directory holding ``config.json``, or a ``config.json`` file. Never loads weights and
    never reaches the Hub. Raises PlanError for an unknown model."""
    spec = "embedded" if spec in (None, "") else str(spec)
    if spec.startswith("s3://"):
        raise PlanError(
            f"cannot plan base model {spec}: weights in S3 have no size the planner can read "
            "offline; give an explicit instance type, or add the model to "
            f"{MODELS_FILE.name} and name it by its id"
        )
    known = known_models().get(spec.lower())
    if known is not None:
        fields = dict(known)
        return Architecture(**fields)
    path = Path(spec).expanduser()
    cfg_file = path / "config.json" if path.is_dir() else path
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PlanError(f"model {spec}: cannot read {cfg_file} ({e})") from e
        if not isinstance(cfg, dict):
            raise PlanError(f"model {spec}: {cfg_file} is not a JSON object")
        return from_hf_config(cfg, name=spec)
    names = sorted({v["name"] for v in known_models().values()})
    raise PlanError(
        f"unknown model {spec!r}: not in the planner's table ({', '.join(names)}) and not a "
        "local directory with config.json. Download its config.json (no weights needed) and "
        "pass the directory, or give the sizes with --params --layers --hidden --heads "
        "--kv-heads --vocab"
    )
