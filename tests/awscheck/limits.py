"""Validate a request against botocore's input shape, including what the client skips.

botocore's ParamValidator checks types, required members and minimums only; the service
also enforces maximum lengths, patterns, enums and numeric maximums from the same model.
``problems()`` checks all of them, plus documented limits the model does not carry.
"""

from __future__ import annotations

import functools
from typing import Any

import botocore.session
import regex  # botocore's patterns are Java regexes (\p{...} classes); `re` rejects some

SAGEMAKER_API = "https://docs.aws.amazon.com/sagemaker/latest/APIReference"


def _nvme(instance_type: str | None) -> bool:
    from codetune.workflow.deploy import supports_kms_volume

    return bool(instance_type) and not supports_kms_volume(instance_type)


def _documented(service: str, operation: str, params: dict) -> list[str]:
    """Rules AWS documents that botocore's model cannot express (cross-field rules)."""
    out = []
    if (service, operation) == ("sagemaker", "CreateTrainingJob"):
        stop = params.get("StoppingCondition", {})
        wait, run = stop.get("MaxWaitTimeInSeconds"), stop.get("MaxRuntimeInSeconds")
        if params.get("EnableManagedSpotTraining") and (wait is None or run is None or wait < run):
            out.append(
                "StoppingCondition: managed spot needs MaxWaitTimeInSeconds >= "
                f"MaxRuntimeInSeconds, got {wait} < {run} ({SAGEMAKER_API}/API_StoppingCondition.html)"
            )
        if params.get("EnableManagedSpotTraining") and "CheckpointConfig" not in params:
            out.append("managed spot without CheckpointConfig loses progress on interruption")
        res = params.get("ResourceConfig", {})
        if "VolumeKmsKeyId" in res and _nvme(res.get("InstanceType")):
            out.append(
                f"ResourceConfig.VolumeKmsKeyId on {res['InstanceType']} (instance storage): "
                f"refused ({SAGEMAKER_API}/API_ResourceConfig.html)"
            )
    if (service, operation) == ("sagemaker", "CreateHyperParameterTuningJob"):
        out += _tuning_rules(params)
    if (service, operation) == ("sagemaker", "CreateProcessingJob"):
        res = params.get("ProcessingResources", {}).get("ClusterConfig", {})
        if "VolumeKmsKeyId" in res and _nvme(res.get("InstanceType")):
            out.append(
                f"ClusterConfig.VolumeKmsKeyId on {res['InstanceType']} (instance storage): "
                f"refused ({SAGEMAKER_API}/API_ProcessingClusterConfig.html)"
            )
    if (service, operation) == ("sagemaker", "CreateEndpointConfig") and "KmsKeyId" in params:
        for v in params.get("ProductionVariants", []):
            if _nvme(v.get("InstanceType")):
                out.append(
                    f"KmsKeyId with {v['InstanceType']} (instance storage): refused "
                    f"({SAGEMAKER_API}/API_CreateEndpointConfig.html#sagemaker-CreateEndpointConfig-request-KmsKeyId)"
                )
    return out


def _tuning_rules(params: dict) -> list[str]:
    """SageMaker's documented tuning rules (API_HyperParameterTuningJobConfig, API_ParameterRanges,
    automatic-model-tuning-how-it-works), and the training job's rules for its trials."""
    out = []
    config = params.get("HyperParameterTuningJobConfig", {})
    definition = params.get("TrainingJobDefinition", {})
    ranges = config.get("ParameterRanges", {})
    named = [r for kind in ranges.values() for r in kind]
    limits = config.get("ResourceLimits", {})
    if len(named) > 30:
        out.append(f"ParameterRanges: {len(named)} hyperparameters, at most 30 searched")
    if config.get("Strategy") == "Grid":
        if ranges.get("IntegerParameterRanges") or ranges.get("ContinuousParameterRanges"):
            out.append("Grid: only categorical parameters are supported")
        combos = 1
        for r in ranges.get("CategoricalParameterRanges", []):
            combos *= len(r["Values"])
        if limits.get("MaxNumberOfTrainingJobs", combos) != combos:
            out.append(f"Grid: MaxNumberOfTrainingJobs must equal the {combos} combinations")
    n, parallel = limits.get("MaxNumberOfTrainingJobs"), limits.get("MaxParallelTrainingJobs")
    if n is not None and parallel is not None and parallel > n:
        out.append(
            f"ResourceLimits: MaxParallelTrainingJobs {parallel} > MaxNumberOfTrainingJobs {n}"
        )
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for r in ranges.get(kind, []):
            if float(r["MinValue"]) > float(r["MaxValue"]):
                out.append(f"{r['Name']}: MinValue above MaxValue")
            if r.get("ScalingType") == "Logarithmic" and float(r["MinValue"]) <= 0:
                out.append(f"{r['Name']}: Logarithmic scaling needs values > 0")
    static = definition.get("StaticHyperParameters", {})
    tuned = {r["Name"] for r in named}
    if tuned & set(static):
        out.append(
            f"StaticHyperParameters must not hold tuned names: {sorted(tuned & set(static))}"
        )
    objective = config.get("HyperParameterTuningJobObjective", {}).get("MetricName")
    metrics = definition.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
    if objective is not None and objective not in {m["Name"] for m in metrics}:
        out.append(f"objective {objective!r} is not among the MetricDefinitions")
    if definition:  # a trial is a training job of the definition
        out += _documented("sagemaker", "CreateTrainingJob", definition)
    return out


@functools.cache
def _model(service: str):
    return botocore.session.get_session().get_service_model(service)


@functools.cache
def _pattern(expr: str):
    try:
        return regex.compile(expr)
    except regex.error:
        return None


def problems(service: str, operation: str, params: dict) -> list[str]:
    """Every way ``params`` breaks the input shape of ``service``.``operation`` ([] = none)."""
    op = _model(service).operation_model(operation)
    out: list[str] = []
    if op.input_shape is not None:
        _check(op.input_shape, params, operation, out)
    return out + _documented(service, operation, params)


def _check(shape, value: Any, where: str, out: list[str]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            out.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        for name in shape.required_members:
            if name not in value:
                out.append(f"{where}.{name}: required member is missing")
        for name, member_value in value.items():
            if name not in shape.members:
                out.append(f"{where}.{name}: unknown member of {shape.name}")
                continue
            _check(shape.members[name], member_value, f"{where}.{name}", out)
        return
    if kind == "list":
        if not isinstance(value, list):
            out.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        _bounds(len(value), meta, where, "items", out)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{where}[{i}]", out)
        return
    if kind == "map":
        if not isinstance(value, dict):
            out.append(f"{where}: expected a map, got {type(value).__name__}")
            return
        _bounds(len(value), meta, where, "entries", out)
        for k, v in value.items():
            _check(shape.key, k, f"{where} key {k!r}", out)
            _check(shape.value, v, f"{where}.{k}", out)
        return
    if kind == "string":
        if not isinstance(value, str):
            out.append(f"{where}: expected a string, got {type(value).__name__}")
            return
        _bounds(len(value), meta, where, "characters", out)
        if shape.enum and value not in shape.enum:
            out.append(f"{where}: {value!r} is not one of {shape.enum}")
        expr = meta.get("pattern")
        compiled = _pattern(expr) if expr else None
        # AWS applies a pattern to the whole value; an anchored one says so itself.
        anchored = expr is not None and (expr.startswith("^") or expr.endswith("$"))
        if compiled is not None and not (
            compiled.search(value) if anchored else compiled.fullmatch(value)
        ):
            out.append(f"{where}: {value[:80]!r} does not match {expr}")
        return
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{where}: expected an integer, got {value!r}")
            return
        _bounds(value, meta, where, "", out)
        return
    if kind in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            out.append(f"{where}: expected a number, got {value!r}")
            return
        _bounds(value, meta, where, "", out)
        return
    if kind == "boolean" and not isinstance(value, bool):
        out.append(f"{where}: expected a boolean, got {value!r}")


def _bounds(n, meta: dict, where: str, unit: str, out: list[str]) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    what = f"{n} {unit}".strip()
    if lo is not None and n < lo:
        out.append(f"{where}: {what}, at least {lo}")
    if hi is not None and n > hi:
        out.append(f"{where}: {what}, at most {hi}")
