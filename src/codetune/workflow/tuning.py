"""Hyperparameter tuning of the training job (run input ``tuning``).

A tuning job runs trials of the very training job a run would start — same image, role,
channels, static hyperparameters, spot and checkpoint rules, VPC and KMS — with the tuned
config keys as SageMaker hyperparameter ranges, and keeps the trial with the lowest
validation loss: the ``eval_loss`` the trainer prints last, matched by its own
``MetricDefinitions`` regex (:mod:`codetune.metrics`). The state machine runs it instead of
the single TrainAdapter job and evaluates the best trial's adapter; ``codetune run --local``
runs the same trials one after another (:func:`local_trials`) and picks the same way
(:func:`objective_value`, :func:`best_trial`).

What lives here: the checks ValidateRequest adds (:func:`check_tuning`), the request blocks
it renders (:func:`job_config`, :func:`tuning_job_name`), the conversion of a
``CreateTrainingJob`` input into the tuning job's ``TrainingJobDefinition``
(:func:`training_job_definition`), and the local search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
import re
import typing
from typing import Any

from codetune.errors import CodetuneError
from codetune.metrics import metric_definitions
from codetune.train.hyperparameters import TUNING_OBJECTIVE_KEY, encode_tuned_value

OBJECTIVE_METRIC = "eval_loss"  # the trainer's validation loss line, printed last
OBJECTIVE_TYPE = "Minimize"
STRATEGIES = ("Bayesian", "Random", "Grid")
DEFAULT_MAX_JOBS = 4  # Bayesian and Random without maxJobs
MAX_RANGES = 30  # SageMaker: at most 30 hyperparameters searched, all range kinds together
TUNING_NAME_MAX = 32  # HyperParameterTuningJobName
TUNING_MAX_RUNTIME = (120, 15768000)  # ResourceLimits.MaxRuntimeInSeconds
# Keys the run input owns elsewhere: tuning them would contradict it.
NOT_TUNABLE = {"base_model": "baseModel names the model; tune training knobs only"}
# The training job's fields a TrainingJobDefinition has too (API_HyperParameterTrainingJobDefinition).
DEFINITION_FIELDS = (
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "VpcConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)
ALGORITHM_FIELDS = ("TrainingImage", "AlgorithmName", "TrainingInputMode", "MetricDefinitions")


def objective_metric_name() -> str:
    """The MetricDefinitions name of the validation loss (``train:eval_loss``)."""
    return _objective_definition()["Name"]


def _objective_definition() -> dict[str, str]:
    (d,) = [d for d in metric_definitions() if d["Name"].endswith(":" + OBJECTIVE_METRIC)]
    return d


def objective_value(log_text: str) -> float | None:
    """The objective as SageMaker reads it from a trial's log: the last value the objective's
    MetricDefinitions regex matches (the trainer prints the base model's loss at step 0 and
    the adapter's after training), or None when no line matches."""
    values = re.findall(_objective_definition()["Regex"], log_text)
    return float(values[-1]) if values else None


# --------------------------------------------------------------------------- validation


def _field_types() -> dict[str, type]:
    """Dotted key -> scalar type of every TrainConfig field (``lora.rank`` -> int)."""
    from codetune.train.config import TrainConfig

    out: dict[str, type] = {}

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            elif tp in (int, float, str, bool):
                out[prefix + f.name] = tp

    walk(TrainConfig, "")
    return out


_KIND_TYPES = {"integer": (int,), "continuous": (float,), "categorical": (int, float, str, bool)}


def check_tuning(
    tuning: dict, training: dict, *, config_check: typing.Callable[[dict], str | None] | None
) -> list[tuple[str, str]]:
    """Violations of a (schema-valid, defaults filled) ``tuning`` section, as (path, message).

    ``training`` is the run input's training section; ``config_check(overrides)`` loads the
    training config with those overrides and returns the trainer's error or None (None when
    the configs are not available here: then values are only checked for shape).
    """
    out: list[tuple[str, str]] = []
    ranges = tuning.get("ranges") or {}
    static = training.get("overrides") or {}
    types = _field_types()
    where = "$.tuning.ranges"
    if len(ranges) > MAX_RANGES:
        out.append((where, f"{len(ranges)} ranges; SageMaker searches at most {MAX_RANGES}"))
    for key, r in ranges.items():
        path = f"{where}.{key}"
        if key in NOT_TUNABLE:
            out.append((path, f"not tunable: {NOT_TUNABLE[key]}"))
            continue
        if key not in types:
            hint = [k for k in types if k.endswith("." + key) or key.endswith(k)][:1]
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            out.append(
                (path, f"not a training config key{did}; tunable: {', '.join(sorted(types))}")
            )
            continue
        if key in static:
            out.append(
                (path, f"also in training.overrides ({static[key]!r}); give the key in one place")
            )
        kind = r.get("type")
        if types[key] not in _KIND_TYPES.get(kind, ()):
            fits = [k for k, tps in _KIND_TYPES.items() if types[key] in tps]
            out.append(
                (
                    f"{path}.type",
                    f"{kind!r} does not fit {key} ({types[key].__name__}); allowed: {', '.join(fits)}",
                )
            )
            continue
        out += _check_range(path, key, kind, r)
    strategy = tuning.get("strategy")
    if strategy == "Grid":
        numeric = [k for k, r in ranges.items() if r.get("type") != "categorical"]
        if numeric:
            out.append(
                (
                    f"{where}.{numeric[0]}",
                    "Grid searches categorical ranges only; list the values "
                    '({"type": "categorical", "values": [...]}) or use strategy Bayesian or Random',
                )
            )
        elif tuning.get("maxJobs") is not None and tuning["maxJobs"] != grid_size(ranges):
            out.append(
                (
                    "$.tuning.maxJobs",
                    f"{tuning['maxJobs']} differs from the grid's "
                    f"{grid_size(ranges)} combinations; Grid runs every one: leave maxJobs null",
                )
            )
    jobs = max_jobs(tuning)
    if isinstance(tuning.get("maxParallelJobs"), int) and tuning["maxParallelJobs"] > jobs:
        out.append(
            (
                "$.tuning.maxParallelJobs",
                f"{tuning['maxParallelJobs']} is above the {jobs} trials; allowed: <= maxJobs",
            )
        )
    if tuning.get("earlyStopping") and strategy == "Grid":
        out.append(("$.tuning.earlyStopping", "true needs strategy Bayesian or Random"))
    if config_check is not None and not out:
        out += _check_values(ranges, static, config_check)
    return out


def _check_range(path: str, key: str, kind: str, r: dict) -> list[tuple[str, str]]:
    out = []
    if kind == "categorical":
        if "values" not in r:
            out.append((f"{path}.values", "required for a categorical range: the values to try"))
        extra = [k for k in ("min", "max", "scaling") if k in r]
        if extra:
            out.append((path, f"{', '.join(extra)}: only for integer and continuous ranges"))
        return out
    if "values" in r:
        out.append((f"{path}.values", "only for categorical ranges; give min and max"))
    lo, hi = r.get("min"), r.get("max")
    for name, v in (("min", lo), ("max", hi)):
        if v is None:
            out.append((f"{path}.{name}", f"required for an {kind} range"))
        elif kind == "integer" and not float(v).is_integer():
            out.append((f"{path}.{name}", f"{v} is not an integer ({key} is an integer)"))
    if lo is None or hi is None:
        return out
    if lo > hi:
        out.append((f"{path}.min", f"{lo} is above max {hi}; allowed: min <= max"))
    scaling = r.get("scaling", "Auto")
    if scaling == "Logarithmic" and lo <= 0:
        out.append((f"{path}.min", f"{lo}: Logarithmic scaling needs min > 0"))
    if scaling == "ReverseLogarithmic" and (kind != "continuous" or lo < 0 or hi >= 1):
        out.append((f"{path}.scaling", "ReverseLogarithmic needs a continuous range within [0, 1)"))
    return out


def _check_values(ranges: dict, static: dict, config_check) -> list[tuple[str, str]]:
    """Every extreme of every range passes the trainer's own config validation."""
    out = []
    for key, r in ranges.items():
        probes = (
            [("values", v) for v in r["values"]]
            if r["type"] == "categorical"
            else [("min", r["min"]), ("max", r["max"])]
        )
        for name, value in probes:
            value = int(value) if r["type"] == "integer" else value
            error = config_check({**static, key: value})
            if error:
                out.append(
                    (f"$.tuning.ranges.{key}.{name}", f"{value!r}: the trainer refuses it: {error}")
                )
                break
    return out


# --------------------------------------------------------------------------- request blocks


def max_jobs(tuning: dict) -> int:
    """Trials the tuning job runs: maxJobs, else every grid combination (Grid) or 4."""
    if tuning.get("maxJobs") is not None:
        return tuning["maxJobs"]
    if tuning.get("strategy") == "Grid":
        return grid_size(tuning.get("ranges") or {})
    return DEFAULT_MAX_JOBS


def grid_size(ranges: dict) -> int:
    return math.prod(len(r.get("values") or [None]) for r in ranges.values())


def tuning_job_name(rid: str, stage: str | None) -> str:
    """``[<stage>-]<runId>-tune``, shortened to fit SageMaker's 32 characters with the
    attempt suffix ``-r<n>``: a run id that does not fit keeps its start and gets 8 hex of its
    SHA-256, so distinct run ids never share a name and the same one always gets it."""
    from codetune.workflow.naming import ATTEMPT_SEPARATOR

    prefix = f"{stage}-" if stage else ""
    room = TUNING_NAME_MAX - len(ATTEMPT_SEPARATOR) - 1 - len(prefix) - len("-tune")
    if len(rid) > room:
        digest = hashlib.sha256(rid.encode()).hexdigest()[:8]
        rid = rid[: room - 9].rstrip("-") + "-" + digest
    return f"{prefix}{rid}-tune"


def parameter_ranges(ranges: dict) -> dict:
    """SageMaker ``ParameterRanges`` of the input's ranges (names = dotted config keys)."""
    out: dict[str, list] = {}
    for key, r in sorted(ranges.items()):
        if r["type"] == "categorical":
            out.setdefault("CategoricalParameterRanges", []).append(
                {"Name": key, "Values": [encode_tuned_value(v) for v in r["values"]]}
            )
            continue
        cast = int if r["type"] == "integer" else float
        kind = "IntegerParameterRanges" if r["type"] == "integer" else "ContinuousParameterRanges"
        out.setdefault(kind, []).append(
            {
                "Name": key,
                "MinValue": str(cast(r["min"])),
                "MaxValue": str(cast(r["max"])),
                "ScalingType": r.get("scaling", "Auto"),
            }
        )
    return out


def job_config(tuning: dict, *, seed_of: str, max_runtime: int | None) -> dict:
    """The ``HyperParameterTuningJobConfig`` block, taken whole by the tuning state.

    ``seed_of`` (the run id) seeds the search, so a redriven run tries the same values;
    ``max_runtime`` (the training step's limit) stops the tuning job before the state times out.
    """
    limits: dict[str, int] = {
        "MaxNumberOfTrainingJobs": max_jobs(tuning),
        "MaxParallelTrainingJobs": tuning["maxParallelJobs"],
    }
    if max_runtime is not None:
        limits["MaxRuntimeInSeconds"] = max(
            TUNING_MAX_RUNTIME[0], min(max_runtime, TUNING_MAX_RUNTIME[1])
        )
    return {
        "Strategy": tuning["strategy"],
        "HyperParameterTuningJobObjective": {
            "Type": OBJECTIVE_TYPE,
            "MetricName": objective_metric_name(),
        },
        "ResourceLimits": limits,
        "ParameterRanges": parameter_ranges(tuning["ranges"]),
        "TrainingJobEarlyStoppingType": "Auto" if tuning["earlyStopping"] else "Off",
        "RandomSeed": int(hashlib.sha256(seed_of.encode()).hexdigest()[:7], 16),
    }


def training_job_definition(create_training_job: dict, static_hyperparameters: Any) -> dict:
    """The ``TrainingJobDefinition`` of a tuning job from a ``CreateTrainingJob`` input.

    Everything a trial shares with the single job is taken from it unchanged; its name and
    tags belong to the job, its hyperparameters become ``StaticHyperParameters`` (the caller
    passes them without the tuned keys). Works on Step Functions parameters too: a ``"K.$"``
    key is carried over as ``"K.$"``; ``static_hyperparameters`` may be a JSONPath string
    (then given as ``"StaticHyperParameters.$"``).
    """
    defn: dict[str, Any] = {}
    for key, value in create_training_job.items():
        name = key.removesuffix(".$")
        if name == "AlgorithmSpecification" and isinstance(value, dict):  # (a path: as it is)
            value = {k: v for k, v in value.items() if k.removesuffix(".$") in ALGORITHM_FIELDS}
        if name in DEFINITION_FIELDS:
            defn[key] = value
    missing = [
        f
        for f in ("AlgorithmSpecification", "RoleArn", "OutputDataConfig", "StoppingCondition")
        if f not in defn and f + ".$" not in defn
    ]
    if missing:
        raise CodetuneError(f"the training job has no {', '.join(missing)}")
    if isinstance(static_hyperparameters, str) and static_hyperparameters.startswith("$"):
        defn["StaticHyperParameters.$"] = static_hyperparameters
    else:
        defn["StaticHyperParameters"] = dict(static_hyperparameters)
    return defn


# --------------------------------------------------------------------------- local search


def local_trials(tuning: dict, *, seed_of: str) -> list[dict]:
    """The trials ``codetune run --local`` runs, in order: each a dict of tuned key -> value.

    Grid: every combination of the categorical values. Random: ``maxJobs`` draws (log-uniform
    for Logarithmic scaling), seeded by ``seed_of``. Bayesian runs as Random here: its
    optimizer is SageMaker's; a few sequential trials on one machine gain little from it.
    """
    ranges = tuning["ranges"]
    keys = sorted(ranges)
    if tuning["strategy"] == "Grid":
        combos = itertools.product(*(ranges[k]["values"] for k in keys))
        return [dict(zip(keys, c, strict=True)) for c in combos]
    rng = random.Random(int(hashlib.sha256(seed_of.encode()).hexdigest()[:8], 16))
    trials = []
    for _ in range(max_jobs(tuning)):
        trials.append({k: _draw(rng, ranges[k]) for k in keys})
    return trials


def trial_hyperparameters(tuning: dict, static: dict, values: dict) -> dict[str, str]:
    """The hyperparameters SageMaker gives the trial of ``values`` (tuned key -> value):
    the static ones, each tuned value as SageMaker renders it (a categorical value as its
    range lists it, JSON text; an integer or continuous one as a decimal number) and
    ``_tuning_objective_metric``."""
    hp = dict(static)
    for key, value in sorted(values.items()):
        kind = tuning["ranges"][key]["type"]
        if kind == "categorical":
            hp[key] = encode_tuned_value(value)
        else:
            hp[key] = str(int(value)) if kind == "integer" else repr(float(value))
    hp[TUNING_OBJECTIVE_KEY] = objective_metric_name()
    return hp


def _draw(rng: random.Random, r: dict):
    if r["type"] == "categorical":
        return rng.choice(r["values"])
    lo, hi = r["min"], r["max"]
    if r.get("scaling") == "Logarithmic":
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    elif r.get("scaling") == "ReverseLogarithmic":
        value = 1 - math.exp(rng.uniform(math.log(1 - hi), math.log(1 - lo)))
    else:
        value = rng.uniform(lo, hi)
    return min(int(hi), max(int(lo), round(value))) if r["type"] == "integer" else value


def best_trial(trials: list[dict]) -> dict:
    """The trial with the lowest objective (``Minimize``); trials without one are skipped.

    Raises CodetuneError when no trial reported the objective.
    """
    scored = [t for t in trials if t.get("objective") is not None]
    if not scored:
        raise CodetuneError(
            f"no trial printed {OBJECTIVE_METRIC} (does the dataset have a validation split?)"
        )
    return min(scored, key=lambda t: t["objective"])


def trial_name(index: int) -> str:
    """Local trial names, numbered like SageMaker's (``<tuning job>-001-<hash>``)."""
    return f"trial-{index + 1:03d}"


def describe_trials(trials: list[dict]) -> str:
    return json.dumps([{k: t[k] for k in ("name", "hyperparameters", "objective")} for t in trials])
