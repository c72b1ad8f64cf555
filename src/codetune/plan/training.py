"""Read what the planner needs from a training config (``training_image/configs/<name>.yaml``
merged with overrides), without depending on the trainer's config dataclass.

Keys read (first one present wins; dotted = nested):

- base model: ``base_model``, ``model.base_model``, ``model.name``
- sequence length: ``max_seq_length``, ``max_seq_len``, ``seq_len``, ``data.max_seq_length``,
  ``training.max_seq_length``
- micro batch: ``per_device_batch_size``, ``per_device_train_batch_size``,
  ``micro_batch_size``, ``batch_size`` (also under ``training.``)
- LoRA: ``lora.rank`` / ``lora.r`` (0 or ``lora.enabled: false`` = full fine-tuning),
  ``lora.target_modules`` / ``lora.targets`` (``all-linear``, ``attn`` or a list),
  ``lora.dropout`` / ``lora.lora_dropout``
- quantization: ``quantization`` (``4bit``/``8bit``/``none`` or a section with ``bits`` /
  ``load_in_4bit`` / ``load_in_8bit``), ``load_in_4bit``, ``quantization.double_quant``
- token cap per micro-batch (packing / padding-free): ``max_tokens_per_batch``,
  ``max_tokens_per_micro_batch`` — without it the planner assumes every example is
  ``max_seq_length`` long (worst case)
- gradient checkpointing: ``gradient_checkpointing`` (also under ``training.``)
- attention: ``attn_implementation`` (``eager`` materialises the s x s scores)

These are the names ``training_image/configs/*.yaml`` use (``base_model``, ``quantization``,
``lora.rank``, ``lora.dropout``, ``lora.target_modules``, ``max_seq_length``,
``per_device_batch_size``, ``gradient_checkpointing``, ``attn_implementation``); the
alternatives keep the planner working on configs written for other trainers.

A missing key takes the planner default of :class:`codetune.plan.memory.Setup`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetune.config import deep_merge, read_yaml
from codetune.errors import ConfigError
from codetune.plan.arch import PlanError
from codetune.plan.memory import Setup, parse_targets

_MISSING = object()


def configs_dir() -> Path:
    """Where training configs live: the trainer's lookup (``$CODETUNE_CONFIG_DIR`` or the
    repository's ``training_image/configs``)."""
    from codetune.train.config import configs_dir as trainer_configs_dir

    return trainer_configs_dir()


def _nest(overrides: dict | None) -> dict:
    """``{"lora.rank": 32}`` (the hyperparameters encoding) or nested dicts -> nested dict."""
    out: dict = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            value = _nest(value)
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = deep_merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def load_training_config(config_name: str, overrides: dict | None = None) -> dict:
    """The merged training config mapping for a config name (or path) + overrides."""
    path = Path(config_name)
    if not path.is_file():
        stem = config_name[:-5] if config_name.endswith(".yaml") else config_name
        path = configs_dir() / f"{stem}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
        raise PlanError(
            f"training config {config_name!r} not found in {configs_dir()} "
            f"(known: {', '.join(known) or 'none'})"
        )
    try:
        data = read_yaml(path)
    except ConfigError as e:
        raise PlanError(str(e)) from e
    return deep_merge(data, _nest(overrides))


def _get(cfg: dict, *paths: str) -> Any:
    for p in paths:
        node: Any = cfg
        for part in p.split("."):
            if not isinstance(node, dict) or part not in node:
                node = _MISSING
                break
            node = node[part]
        if node is not _MISSING and node is not None:
            return node
    return _MISSING


def base_model_of(cfg: dict) -> str | None:
    """The base model the config names, if any."""
    v = _get(cfg, "base_model", "model.base_model", "model.name", "model.base")
    return None if v is _MISSING else str(v)


def _quantization(cfg: dict) -> tuple[str, bool]:
    q = _get(cfg, "quantization", "model.quantization")
    double = _get(cfg, "quantization.double_quant", "bnb_4bit_use_double_quant")
    double = True if double is _MISSING else bool(double)
    if q is _MISSING:
        if _get(cfg, "load_in_4bit", "model.load_in_4bit") is True:
            return "4bit", double
        if _get(cfg, "load_in_8bit", "model.load_in_8bit") is True:
            return "8bit", double
        return "4bit", double
    if isinstance(q, dict):
        if q.get("enabled") is False:
            return "none", double
        bits = q.get("bits")
        if bits is None:
            bits = 4 if q.get("load_in_4bit") else 8 if q.get("load_in_8bit") else None
        if bits is None:
            q = q.get("mode") or q.get("type") or "4bit"
        else:
            return {4: "4bit", 8: "8bit", 16: "none", 32: "none", 0: "none"}.get(int(bits)), double
    q = str(q).lower().replace("-", "").replace("_", "")
    mapping = {"4bit": "4bit", "nf4": "4bit", "int4": "4bit", "8bit": "8bit", "int8": "8bit"}
    mapping.update({"none": "none", "false": "none", "no": "none", "bf16": "none"})
    if q not in mapping:
        raise PlanError(f"training config: quantization {q!r} is not 4bit, 8bit or none")
    return mapping[q], double


def setup_from_config(cfg: dict, device: str = "gpu") -> Setup:
    """A planner :class:`Setup` from a merged training config mapping."""
    kw: dict[str, Any] = {"device": device}
    seq = _get(
        cfg,
        "max_seq_length",
        "max_seq_len",
        "seq_len",
        "data.max_seq_length",
        "training.max_seq_length",
        "training.max_seq_len",
    )
    if seq is not _MISSING:
        kw["seq_len"] = seq
    mb = _get(
        cfg,
        "per_device_batch_size",
        "per_device_train_batch_size",
        "micro_batch_size",
        "batch_size",
        "training.per_device_batch_size",
        "training.per_device_train_batch_size",
        "training.micro_batch_size",
        "training.batch_size",
    )
    if mb is not _MISSING:
        kw["micro_batch"] = mb
    cap = _get(
        cfg, "max_tokens_per_batch", "max_tokens_per_micro_batch", "training.max_tokens_per_batch"
    )
    if cap is not _MISSING:
        kw["max_tokens"] = cap
    rank = _get(cfg, "lora.rank", "lora.r")
    if _get(cfg, "lora.enabled") is False:
        rank = 0
    if rank is not _MISSING:
        kw["lora_rank"] = rank
    targets = _get(cfg, "lora.target_modules", "lora.targets")
    if targets is not _MISSING:
        kw["lora_targets"] = parse_targets(targets)
    dropout = _get(cfg, "lora.dropout", "lora.lora_dropout")
    if dropout is not _MISSING:
        kw["lora_dropout"] = float(dropout) > 0
    kw["quantization"], kw["double_quant"] = _quantization(cfg)
    if kw.get("lora_rank") == 0:
        kw["quantization"] = "none"
    attn = _get(cfg, "attn_implementation", "model.attn_implementation")
    if attn is not _MISSING:
        kw["eager_attention"] = str(attn) == "eager"
    gc = _get(cfg, "gradient_checkpointing", "training.gradient_checkpointing")
    if gc is not _MISSING:
        kw["grad_checkpointing"] = bool(gc)
    try:
        return Setup(**kw)
    except TypeError as e:  # pragma: no cover - defensive
        raise PlanError(f"training config: {e}") from e
