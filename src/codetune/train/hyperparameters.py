"""SageMaker hyperparameters <-> training config: the one encoding both the Step Functions
workflow (via ValidateRequest) and ``codetune train --remote`` use.

SageMaker passes hyperparameters as a flat ``str -> str`` map and writes them to
``/opt/ml/input/config/hyperparameters.json``. codetune sends two static keys:

- ``codetune_config``: the name of a config file in ``training_image/configs/`` (as shipped in the image)
- ``codetune_overrides``: a JSON object of dotted overrides (``{"lora.rank": 32}``), keys sorted

so the bytes are identical whichever client built the job. A trial of a hyperparameter tuning
job (run input ``tuning``) also gets one key per tuned value, named by its dotted config key
(``"lora.rank": "16"``, the value as SageMaker renders it: JSON for the categorical values
codetune sends, a plain number for integer and continuous ranges), and SageMaker's own
``_tuning_objective_metric``. A tuned key is decoded exactly like a static override.
"""

from __future__ import annotations

import json
import re

from codetune.errors import ConfigError

CONFIG_KEY = "codetune_config"
OVERRIDES_KEY = "codetune_overrides"
# SageMaker adds this to the hyperparameters of every training job a tuning job starts.
TUNING_OBJECTIVE_KEY = "_tuning_objective_metric"
DOTTED_KEY = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")


def to_hyperparameters(config_name: str, overrides: dict | None = None) -> dict[str, str]:
    """Encode a config name + dotted overrides as SageMaker hyperparameters."""
    return {
        CONFIG_KEY: config_name,
        OVERRIDES_KEY: json.dumps(overrides or {}, sort_keys=True, separators=(",", ":")),
    }


def encode_tuned_value(value) -> str:
    """A categorical value as SageMaker gets it (and hands back to the trial): JSON text."""
    return json.dumps(value)


def decode_tuned_value(text: str):
    """The value of a tuned hyperparameter: JSON where it parses (numbers, the categorical
    values codetune encodes), else the string itself."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def is_tuning_trial(hp: dict) -> bool:
    """True for the hyperparameters of a training job started by a tuning job."""
    return TUNING_OBJECTIVE_KEY in hp


def from_hyperparameters(hp: dict) -> tuple[str | None, list[str]]:
    """Decode hyperparameters into (config name or None, ``--set`` style overrides).

    Raises ConfigError for a key that is neither codetune's nor a dotted config key, a
    malformed ``codetune_overrides``, or a key both static and tuned.
    """
    tuned = {
        k: v for k, v in hp.items() if k not in (CONFIG_KEY, OVERRIDES_KEY, TUNING_OBJECTIVE_KEY)
    }
    unknown = sorted(k for k in tuned if not DOTTED_KEY.match(k))
    if unknown:
        raise ConfigError(
            f"hyperparameters.json: unknown key(s) {', '.join(unknown)}; codetune reads "
            f"{CONFIG_KEY}, {OVERRIDES_KEY} and tuned config keys (dotted, like lora.rank)"
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
    both = sorted(set(tuned) & set(overrides))
    if both:
        raise ConfigError(
            f"hyperparameters.json: {', '.join(both)} both tuned and in {OVERRIDES_KEY}; "
            "a key is either a static override or a tuned range"
        )
    values = {**overrides, **{k: decode_tuned_value(v) for k, v in tuned.items()}}
    sets = [f"{k}={json.dumps(v)}" for k, v in sorted(values.items())]
    return hp.get(CONFIG_KEY), sets
