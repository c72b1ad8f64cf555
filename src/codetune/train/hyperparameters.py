"""SageMaker hyperparameters <-> training config: the one encoding both the Step Functions
workflow (via ValidateRequest) and ``codetune train --remote`` use.

SageMaker passes hyperparameters as a flat ``str -> str`` map and writes them to
``/opt/ml/input/config/hyperparameters.json``. codetune sends exactly two keys:

- ``codetune_config``: the name of a config file in ``training_image/configs/`` (as shipped in the image)
- ``codetune_overrides``: a JSON object of dotted overrides (``{"lora.rank": 32}``), keys sorted

so the bytes are identical whichever client built the job.
"""

from __future__ import annotations

import json

from codetune.errors import ConfigError

CONFIG_KEY = "codetune_config"
OVERRIDES_KEY = "codetune_overrides"


def to_hyperparameters(config_name: str, overrides: dict | None = None) -> dict[str, str]:
    """Encode a config name + dotted overrides as SageMaker hyperparameters."""
    return {
        CONFIG_KEY: config_name,
        OVERRIDES_KEY: json.dumps(overrides or {}, sort_keys=True, separators=(",", ":")),
    }


def from_hyperparameters(hp: dict) -> tuple[str | None, list[str]]:
    """Decode hyperparameters into (config name or None, ``--set`` style overrides)."""
    unknown = sorted(set(hp) - {CONFIG_KEY, OVERRIDES_KEY})
    if unknown:
        raise ConfigError(
            f"hyperparameters.json: unknown key(s) {', '.join(unknown)}; codetune reads only "
            f"{CONFIG_KEY} and {OVERRIDES_KEY}"
        )
    raw = hp.get(OVERRIDES_KEY) or "{}"
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"hyperparameters.json: {OVERRIDES_KEY} is not a JSON object ({e.msg})"
        ) from e
    if not isinstance(overrides, dict):
        raise ConfigError(f"hyperparameters.json: {OVERRIDES_KEY} must be a JSON object")
    sets = [f"{k}={json.dumps(v)}" for k, v in sorted(overrides.items())]
    return hp.get(CONFIG_KEY), sets
