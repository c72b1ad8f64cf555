"""ValidateRequest: run input (schemas/run-input.schema.json) -> resolved RunRequest.

Every violation is collected — schema errors, cross-field rules, bucket rules, the planner's
verdict — and raised together as one ``InvalidRunInput`` whose message lists each with its
JSON path and what is allowed, so a user fixes the input in one round trip.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from jsonschema import Draft202012Validator

from codetune.errors import CodetuneError
from codetune.train.hyperparameters import to_hyperparameters
from codetune.train.job import (
    MAX_SECONDS,
    JobStack,
    TrainingJobSpec,
    default_max_wait,
    training_job,
)
from codetune.workflow import naming, tuning
from codetune.workflow.deploy import BASE_MAX_LORA_RANK, supports_kms_volume
from codetune.workflow.errors import InvalidRunInput
from codetune.workflow.request import (
    SCHEMA_VERSION,
    BaseModelRef,
    DataRef,
    DeploymentSpec,
    EvaluationSpec,
    JobNames,
    PrepareSpec,
    RegistrationSpec,
    RunPaths,
    RunRequest,
    TrainingSpec,
    TuningSpec,
)
from codetune.workflow.schemas import RUN_INPUT, load_schema

S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")
# Where each S3 input may live in the artifact bucket: the prefixes the roles that read it are
# granted (cdk/stack.py). Base models are read by the jobs and the endpoint, datasets by the
# jobs and RegisterAdapter (its manifest): neither may come from an input bucket, which only
# the jobs read. Codebases are read by PrepareDataset only.
ARTIFACT_PREFIXES = {
    "$.baseModel": ("base-models/",),
    "$.data.dataset": ("datasets/", "runs/"),
    "$.data.codebase": ("codebases/",),
}
INPUT_BUCKET_REFS = ("$.data.codebase",)
# SageMaker caps each ContainerArguments item at 256 characters and the list at 256 items
# (API_AppSpecification); the prepare overrides reach the job as `--set key=value` arguments.
CONTAINER_ARGUMENT_MAX = 256
CONTAINER_ARGUMENTS_MAX = 256
MERGE_INPUT = "/opt/ml/processing/input/shards"  # the MergeDataset job's `shards` input
DEFAULT_MODEL_PACKAGE_GROUP = "codetune"
DEFAULT_ENDPOINT_NAME = "codetune"  # a local run's, when the input names none
# components mode: <endpoint>- stays whole in every component name (54 characters kept
# before the hash suffix of naming.component_name)
COMPONENT_ENDPOINT_MAX = 53
BASE_ADAPTER_NAME = "base"  # the serving contract's name of the base model (codetune.serve)


def validate_run_input(
    doc: Any,
    *,
    execution_name: str,
    artifact_bucket: str,
    allowed_buckets: Iterable[str] | None = None,
    model_package_group: str = DEFAULT_MODEL_PACKAGE_GROUP,
    stage: str | None = None,
    codebase_fingerprint: Callable[[str], str] | None = None,
    endpoint_name: str | None = None,
    max_training_seconds: int | None = None,
    job_stack: JobStack | None = None,
) -> RunRequest:
    """Validate a run input, fill defaults, resolve ``"auto"``, derive names.

    ``artifact_bucket`` is the stack's artifact bucket name (AWS run) or, for a local run, a
    ``file://`` URI or absolute directory (then local paths and ``stdlib:`` are allowed).
    ``allowed_buckets``: buckets S3 inputs may come from (default: the artifact bucket only;
    in a local run, any). ``stage`` prefixes SageMaker names so stages sharing an account
    never collide. ``codebase_fingerprint(uri)`` (the Lambda passes one that hashes the S3
    listing) makes the prepare cache key change when the codebase's contents change.
    ``endpoint_name``: the only ``deployment.endpointName`` allowed (the stack's rollback
    alarms watch that one endpoint); None allows any (local runs). ``max_training_seconds``:
    the state machine's timeout of the training task; a job that may run longer (max runtime,
    or max wait with spot) is refused, since the task would time out with the job running.
    ``job_stack``: the image, role, key and network of the training job; with it the request
    carries the job's whole CreateTrainingJob input (``training.job``; a local run's has
    ``file://`` URIs, the local runner lays its container out from it).

    Returns the ``RunRequest``; raises ``InvalidRunInput`` listing every violation.
    """
    local = artifact_bucket.startswith(("file://", "/"))
    allowed = _allowed_buckets(artifact_bucket, allowed_buckets, local)
    rid = naming.run_id(execution_name)
    jobs = naming.job_names(rid, stage)
    jobs["tune"] = tuning.tuning_job_name(rid, stage)

    if not isinstance(doc, dict):
        raise InvalidRunInput([("$", f"expected a JSON object, got {_json_type(doc)}")])
    schema = load_schema(RUN_INPUT)
    violations = _schema_violations(doc, schema)
    bad_paths = {p for p, _ in violations}
    doc = fill_defaults(copy.deepcopy(doc), schema)
    violations += _cross_field(
        doc, local=local, allowed=allowed, artifact=None if local else artifact_bucket
    )
    violations += _merge_prepare_languages(doc.get("prepare"))
    violations += _check_endpoint(doc.get("deployment"), endpoint_name)
    violations += _check_training_time(doc.get("training"), max_training_seconds)
    violations += _check_tuning(doc, bad_paths)
    # the trainer and the planner see the training section only once its own fields are valid
    if not _touches_training(violations):
        violations += _check_training_config(doc)
    if isinstance(doc.get("evaluation"), dict) and not any(
        p.startswith("$.evaluation") for p, _ in violations
    ):
        violations += _check_evaluation_config(doc["evaluation"])
    instance_type, source = None, "input"
    if not _touches_training(violations) and not bad_paths:
        instance_type, source, error = _resolve_instance(doc)
        if error:
            violations.append(("$.training.instanceType", error))
    if violations:
        raise InvalidRunInput(_dedupe(violations))

    return _build(
        doc,
        execution_name,
        rid,
        jobs,
        artifact_bucket,
        local,
        model_package_group,
        instance_type,
        source,
        codebase_fingerprint,
        endpoint_name,
        max_training_seconds,
        job_stack,
    )


def _allowed_buckets(
    artifact_bucket: str, allowed_buckets: Iterable[str] | None, local: bool
) -> set[str] | None:
    """The buckets S3 inputs may come from; None allows any (a local run's default)."""
    if allowed_buckets is None:
        return None if local else {artifact_bucket}
    return set(allowed_buckets) | ({artifact_bucket} if not local else set())


def _schema_violations(doc: dict, schema: dict) -> list[tuple[str, str]]:
    """Every JSON-schema error of ``doc``, each described with what is allowed."""
    return [v for e in Draft202012Validator(schema).iter_errors(doc) for v in _describe(e, schema)]


def _merge_prepare_languages(prep: Any) -> list[tuple[str, str]]:
    """Fold ``prepare.languages`` into ``prepare.config`` (in place) and check the prepare
    job's config and container arguments; returns the violations."""
    out = []
    if isinstance(prep, dict) and prep.get("languages") and isinstance(prep.get("config"), dict):
        # prepare.languages is the prepare config's `languages` key, given a place of its own
        if prep["config"].get("languages", prep["languages"]) != prep["languages"]:
            out.append(("$.prepare.languages", "differs from prepare.config.languages; give one"))
        prep["config"] = {**prep["config"], "languages": prep["languages"]}
    if isinstance(prep, dict) and isinstance(prep.get("config"), dict):
        out += _check_prepare_config(prep["config"])
    return out


def _check_endpoint(dep: Any, endpoint_name: str | None) -> list[tuple[str, str]]:
    """``deployment.endpointName`` is the stack's endpoint, and short enough for component
    names in components mode."""
    out = []
    if (
        endpoint_name is not None
        and isinstance(dep, dict)
        and isinstance(dep.get("endpointName"), str)
        and dep["endpointName"] != endpoint_name
    ):
        out.append(
            (
                "$.deployment.endpointName",
                f"{dep['endpointName']!r} is not this stack's endpoint; allowed: "
                f"{endpoint_name!r} (the endpoint its rollback alarms watch; to deploy under "
                "another name, set endpointName in cdk.json and redeploy the stack)",
            )
        )
    if isinstance(dep, dict) and dep.get("mode", "components") == "components":
        endpoint = dep.get("endpointName") or endpoint_name or DEFAULT_ENDPOINT_NAME
        if isinstance(endpoint, str) and len(endpoint) > COMPONENT_ENDPOINT_MAX:
            out.append(
                (
                    "$.deployment.endpointName",
                    f"{endpoint!r} has {len(endpoint)} characters; with inference components "
                    f"at most {COMPONENT_ENDPOINT_MAX}, so that <endpoint>-base and "
                    "<endpoint>-<adapter> fit SageMaker's 63 (and the stack's IAM prefix "
                    '<endpoint>-); shorten it or set deployment.mode to "single-model"',
                )
            )
    return out


def _check_tuning(doc: dict, bad_paths: set[str]) -> list[tuple[str, str]]:
    """The tuning section against the training section, once the schema accepts both."""
    if not isinstance(doc.get("tuning"), dict) or any(
        p.startswith(("$.tuning", "$.training")) for p in bad_paths
    ):
        return []
    return tuning.check_tuning(
        doc["tuning"], doc["training"], config_check=_training_config_check(doc)
    )


def _touches_training(violations: list[tuple[str, str]]) -> bool:
    return any(p.startswith(("$.training", "$.baseModel")) for p, _ in violations)


# --------------------------------------------------------------------------- defaults


def fill_defaults(doc: dict, schema: dict) -> dict:
    """Fill schema ``default`` values into ``doc`` (in place, recursively); returns ``doc``."""
    for key, sub in schema.get("properties", {}).items():
        if key not in doc and "default" in sub:
            doc[key] = copy.deepcopy(sub["default"])
        if isinstance(doc.get(key), dict) and "properties" in sub:
            fill_defaults(doc[key], sub)
    return doc


# --------------------------------------------------------------------------- messages


def _json_path(parts: Iterable) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _subschema(schema: dict, parts: Iterable) -> dict:
    """The schema at an instance path; a map's value schema inherits the map's description."""
    node = schema
    for p in parts:
        if isinstance(p, int):
            node = node.get("items", {})
        elif p in node.get("properties", {}):
            node = node["properties"][p]
        else:
            extra = node.get("additionalProperties")
            desc = node.get("description", "")
            node = {"description": desc, **extra} if isinstance(extra, dict) else {}
    return node


def _describe(e, schema: dict) -> list[tuple[str, str]]:
    """One or more (path, message) pairs for a jsonschema error, saying what is allowed."""
    parts = list(e.absolute_path)
    path = _json_path(parts)
    here = _subschema(schema, parts)
    allowed = here.get("description") or e.schema.get("description", "")
    value = e.instance
    v = e.validator
    if v == "required":
        missing = [k for k in e.validator_value if k not in value]
        return [
            (
                _json_path([*parts, k]),
                "required field is missing; "
                + _subschema(schema, [*parts, k]).get("description", ""),
            )
            for k in missing
        ]
    if v == "additionalProperties" and "properties" in e.schema:
        known = list(e.schema["properties"])
        out = []
        for k in value:
            if k in known:
                continue
            hint = difflib.get_close_matches(k, known, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            out.append(
                (_json_path([*parts, k]), f"unknown field{did}; allowed fields: {', '.join(known)}")
            )
        return out
    if v == "additionalProperties":  # a map of name -> typed value (thresholds)
        return [(path, f"{e.message}; allowed: {allowed}")]
    if v == "type":
        want = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
        msg = f"expected {' or '.join(want)}, got {_json_type(value)} {json.dumps(value)[:60]}"
        return [(path, f"{msg}; allowed: {allowed}")]
    if v in ("enum", "const"):
        options = e.validator_value if v == "enum" else [e.validator_value]
        return [
            (
                path,
                f"{json.dumps(value)} is not allowed; allowed: {', '.join(map(json.dumps, options))}",
            )
        ]
    if v == "pattern":
        return [(path, f"{json.dumps(value)[:80]} is not allowed; allowed: {allowed}")]
    if v == "propertyNames":
        bad = e.message.split(" does not match")[0]
        return [
            (path, f"key {bad} is not a dotted lowercase name (like lora.rank); allowed: {allowed}")
        ]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": "below the minimum", "maximum": "above the maximum"}.get(v, v)
        return [(path, f"{value} is {word} {e.validator_value}; allowed: {allowed}")]
    if v in ("minLength", "maxLength", "minItems", "maxItems", "uniqueItems"):
        return [(path, f"{e.message}; allowed: {allowed}")]
    return [(path, f"{e.message}; allowed: {allowed}")]


def _dedupe(violations: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for v in violations:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


# --------------------------------------------------------------------------- cross-field


def _is_local_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("file://", "/", "stdlib:"))


def _cross_field(
    doc: dict, *, local: bool, allowed: set[str] | None, artifact: str | None
) -> list[tuple[str, str]]:
    """The rules between fields that the schema cannot say, section by section."""
    return [
        *_check_data(doc.get("data")),
        *_check_refs(doc, local=local, allowed=allowed, artifact=artifact),
        *_check_training_fields(doc),
        *_check_evaluation_fields(doc),
        *_check_deployment_fields(doc),
    ]


def _section(doc: dict, name: str) -> dict:
    """``doc[name]`` when it is an object (the schema reports it otherwise), else ``{}``."""
    return doc.get(name) if isinstance(doc.get(name), dict) else {}


def _check_data(data: Any) -> list[tuple[str, str]]:
    """Exactly one of ``data.codebase`` and ``data.dataset``."""
    if not isinstance(data, dict):
        return []
    given = [k for k in ("codebase", "dataset") if k in data]
    if not given:
        return [("$.data", "give data.codebase (to prepare a dataset) or data.dataset")]
    if len(given) == 2:
        return [
            (
                "$.data",
                "give data.codebase or data.dataset, not both (dataset skips preparation)",
            )
        ]
    return []


def _check_refs(
    doc: dict, *, local: bool, allowed: set[str] | None, artifact: str | None
) -> list[tuple[str, str]]:
    """Each input reference is of the run's kind (local or S3), in an allowed bucket, and
    under a prefix every role that reads it may read."""
    out: list[tuple[str, str]] = []
    data = _section(doc, "data")
    refs = {"$.baseModel": doc.get("baseModel")}
    for k in ("codebase", "dataset"):
        refs[f"$.data.{k}"] = data.get(k)
    for path, value in refs.items():
        if not isinstance(value, str):
            continue
        if _is_local_ref(value) and not local:
            out.append(
                (path, f"{value!r} is a local reference; an AWS run reads inputs from s3:// URIs")
            )
        m = S3_URI.match(value)
        if m and allowed is not None and m.group(1) not in allowed:
            out.append(
                (
                    path,
                    f"bucket {m.group(1)!r} is not allowed; allowed buckets: "
                    + ", ".join(sorted(allowed)),
                )
            )
        elif m and artifact is not None:
            out += _readable(path, m.group(1), (m.group(2) or "/").lstrip("/"), artifact)
    return out


def _check_training_fields(doc: dict) -> list[tuple[str, str]]:
    """Spot's max wait, the base model named once, the RL section, a known config."""
    out: list[tuple[str, str]] = []
    tr = _section(doc, "training")
    if tr.get("maxWaitSeconds") is not None:
        if tr.get("spot") is not True:
            out.append(("$.training.maxWaitSeconds", "only allowed with training.spot = true"))
        elif isinstance(tr.get("maxRuntimeSeconds"), int) and isinstance(
            tr.get("maxWaitSeconds"), int
        ):
            if tr["maxWaitSeconds"] < tr["maxRuntimeSeconds"]:
                out.append(
                    (
                        "$.training.maxWaitSeconds",
                        f"{tr['maxWaitSeconds']} is below training.maxRuntimeSeconds "
                        f"({tr['maxRuntimeSeconds']}); allowed: >= maxRuntimeSeconds",
                    )
                )
    overrides = _section(tr, "overrides")
    if "base_model" in overrides and overrides["base_model"] != doc.get("baseModel"):
        out.append(
            (
                "$.training.overrides.base_model",
                f"{overrides['base_model']!r} contradicts baseModel {doc.get('baseModel')!r}; "
                "name the model in baseModel only",
            )
        )
    if isinstance(tr.get("rl"), dict):
        out += _check_rl(tr["rl"])
    if isinstance(tr.get("config"), str):
        known = known_training_configs()
        if known is not None and tr["config"] not in known:
            hint = difflib.get_close_matches(tr["config"], sorted(known), n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            out.append(
                (
                    "$.training.config",
                    f"unknown training config {tr['config']!r}{did}; allowed: "
                    + ", ".join(sorted(known)),
                )
            )
    return out


def _check_evaluation_fields(doc: dict) -> list[tuple[str, str]]:
    """compareSft only with the GRPO stage; thresholds the gate knows."""
    out: list[tuple[str, str]] = []
    ev = _section(doc, "evaluation")
    if ev.get("compareSft") is True and not _rl_enabled(_section(doc, "training")):
        out.append(
            (
                "$.evaluation.compareSft",
                "true needs the GRPO stage (only then is an SFT-only adapter kept): set "
                "training.rl.enabled to true, or compareSft to false",
            )
        )
    if isinstance(ev.get("thresholds"), dict):
        from codetune.evaluate.gate import DEFAULT_THRESHOLDS

        known_t = set(DEFAULT_THRESHOLDS)
        for name in ev["thresholds"]:
            if name not in known_t:
                out.append(
                    (
                        f"$.evaluation.thresholds.{name}",
                        "unknown threshold; allowed: " + ", ".join(sorted(known_t)),
                    )
                )
    return out


def _check_deployment_fields(doc: dict) -> list[tuple[str, str]]:
    """A free adapter name; in components mode an adapter and an instance the base component
    can take; capacities in order."""
    out: list[tuple[str, str]] = []
    dep = _section(doc, "deployment")
    if dep.get("adapterName") == BASE_ADAPTER_NAME:
        out.append(
            (
                "$.deployment.adapterName",
                f"{BASE_ADAPTER_NAME!r} is reserved: it names the base model (and the "
                "endpoint's base component); choose another name",
            )
        )
    if dep.get("mode", "components") == "components":
        out += _check_base_component(dep, doc.get("training"))
    return out + _check_capacity(dep)


def _check_base_component(dep: dict, tr: Any) -> list[tuple[str, str]]:
    """Components mode: the base component takes the adapter's rank and fits the instance."""
    out: list[tuple[str, str]] = []
    rank = _lora_rank(tr) if isinstance(tr, dict) else None
    if rank and rank > BASE_MAX_LORA_RANK:
        out.append(
            (
                "$.training.overrides.lora.rank",
                f"rank {rank}: the endpoint's base component takes adapters up to rank "
                f"{BASE_MAX_LORA_RANK}; train a smaller rank or set deployment.mode to "
                '"single-model"',
            )
        )
    if isinstance(dep.get("instanceType"), str):
        from codetune.workflow.deploy import base_compute

        try:
            base_compute(dep["instanceType"])
        except CodetuneError as e:
            out.append(
                (
                    "$.deployment.instanceType",
                    f"the base inference component cannot be sized: {e}; or set "
                    'deployment.mode to "single-model"',
                )
            )
    return out


def _check_capacity(dep: dict) -> list[tuple[str, str]]:
    """minCapacity <= instanceCount <= maxCapacity."""
    lo, n, hi = dep.get("minCapacity"), dep.get("instanceCount"), dep.get("maxCapacity")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, n, hi)):
        return []
    if lo > hi:
        return [
            (
                "$.deployment.minCapacity",
                f"{lo} is above maxCapacity {hi}; allowed: <= maxCapacity",
            )
        ]
    if not lo <= n <= hi:
        return [
            (
                "$.deployment.instanceCount",
                f"{n} is outside minCapacity..maxCapacity ({lo}..{hi})",
            )
        ]
    return []


def _check_training_time(tr: Any, limit: int | None) -> list[tuple[str, str]]:
    """The training job ends (max runtime; with spot, max wait) within the task's timeout."""
    if (
        limit is None
        or not isinstance(tr, dict)
        or not isinstance(tr.get("maxRuntimeSeconds"), int)
    ):
        return []
    key, seconds = "maxRuntimeSeconds", tr["maxRuntimeSeconds"]
    if tr.get("spot") is True and isinstance(tr.get("maxWaitSeconds"), int):
        key, seconds = "maxWaitSeconds", tr["maxWaitSeconds"]
    if seconds <= limit:
        return []
    return [
        (
            f"$.training.{key}",
            f"the job may run {seconds} s, longer than this stack's training step allows; "
            f"allowed: <= {limit} (or raise stateMachineTimeoutHours in cdk.json)",
        )
    ]


def _readable(path: str, bucket: str, key: str, artifact: str) -> list[tuple[str, str]]:
    """The input at ``s3://bucket/key`` can be read by every role that reads it."""
    prefixes = ARTIFACT_PREFIXES[path]
    where = ", ".join(f"s3://{artifact}/{p}" for p in prefixes)
    if bucket == artifact:
        if not key.startswith(prefixes):
            return [
                (
                    path,
                    f"s3://{bucket}/{key} is outside the prefixes its readers may read; "
                    f"allowed: {where}...",
                )
            ]
        return []
    if path not in INPUT_BUCKET_REFS:
        return [
            (
                path,
                f"s3://{bucket}/{key}: only the SageMaker jobs read the input buckets, and "
                f"this input is also read by the endpoint or RegisterAdapter; allowed: {where}...",
            )
        ]
    return []


def prepare_arguments(config: dict) -> list[str]:
    """The prepare job's container arguments: ``--no-progress`` and one ``--set key=value``
    per override (the CLI flags the environment's CODETUNE_PREPARE_CONFIG would give)."""
    args = ["--no-progress"]
    for item in _sets(config):
        args += ["--set", item]
    return args


def _check_prepare_config(config: dict) -> list[tuple[str, str]]:
    """The prepare job's config as the job will load it (``PrepareConfig`` through the
    project's loader, from the same ``--set`` arguments), so a value the job would refuse
    at start-up is refused here with the job's message; then SageMaker's argument limits."""
    from codetune.config import load_config
    from codetune.data.config import PrepareConfig

    try:
        load_config(PrepareConfig, None, _sets(config))
    except CodetuneError as e:
        return [("$.prepare.config", f"the prepare job refuses it: {e}")]
    return _check_prepare_arguments(config)


def _sets(config: dict) -> list[str]:
    """Dotted overrides as the ``key=<json>`` strings a ``--set`` flag takes."""
    return [f"{k}={json.dumps(v)}" for k, v in sorted(config.items())]


def _check_prepare_arguments(config: dict) -> list[tuple[str, str]]:
    out = []
    for k, v in sorted(config.items()):
        arg = f"{k}={json.dumps(v)}"
        if len(arg) > CONTAINER_ARGUMENT_MAX:
            out.append(
                (
                    f"$.prepare.config.{k}",
                    f"{len(arg)} characters as the argument --set {arg[:40]}...; SageMaker "
                    f"allows at most {CONTAINER_ARGUMENT_MAX} per container argument "
                    "(AppSpecification.ContainerArguments): shorten the value",
                )
            )
    merge_args = 3  # --merge <dir> plus every prepare argument
    if len(prepare_arguments(config)) + merge_args > CONTAINER_ARGUMENTS_MAX:
        out.append(
            (
                "$.prepare.config",
                f"{len(config)} overrides; SageMaker allows at most {CONTAINER_ARGUMENTS_MAX} "
                "container arguments (two per override): give fewer",
            )
        )
    return out


def _train_config(tr: dict):
    """The training job's ``TrainConfig`` as the job will load it (shipped config + the
    input's overrides and rl section, through the trainer's loader); None when the configs
    are not findable here or the trainer refuses it (``_check_training_config`` says why)."""
    name = tr.get("config")
    known = known_training_configs()
    overrides = tr.get("overrides")
    if not isinstance(name, str) or known is None or name not in known:
        return None
    if not isinstance(overrides or {}, dict) or not isinstance(tr.get("rl") or {}, dict):
        return None
    from codetune.train.config import load_train_config

    try:
        return load_train_config(name, _training_overrides(tr))
    except CodetuneError:
        return None


def _lora_rank(tr: dict) -> int | None:
    """The adapter's LoRA rank as the trainer reads it (None when not known here)."""
    cfg = _train_config(tr)
    return cfg.lora.rank if cfg else None


def _rl_enabled(tr: dict) -> bool:
    """Whether training runs its GRPO stage, as the trainer reads it (unknown when the
    configs are not here: then assumed on)."""
    cfg = _train_config(tr)
    return cfg.rl.enabled if cfg else True


def _check_rl(rl: dict) -> list[tuple[str, str]]:
    from codetune.config import from_dict
    from codetune.train.rl_config import RLConfig

    try:
        cfg = from_dict(RLConfig, rl)
        cfg.validate()
    except CodetuneError as e:
        return [("$.training.rl", str(e))]
    return []


def known_training_configs() -> set[str] | None:
    """Names of the shipped training configs, or None when they are not findable here.

    The trainer's lookup (``codetune.train.config.configs_dir``: ``$CODETUNE_CONFIG_DIR``,
    which the Lambda's layer sets, or the repository's ``training_image/configs``).
    """
    from codetune.train.config import shipped_configs

    return set(shipped_configs()) or None


def _check_training_config(doc: dict) -> list[tuple[str, str]]:
    """The training job's config as the trainer will load it: the shipped config plus the
    job's overrides through the trainer's own loader, so a value the job would refuse at
    start-up (``lora.rank: 0``, an unknown key) is refused here with the trainer's message."""
    tr = doc.get("training")
    if not isinstance(tr, dict) or not isinstance(doc.get("baseModel"), str):
        return []
    if not isinstance(tr.get("overrides"), dict) or not isinstance(tr.get("rl") or {}, dict):
        return []  # the schema's errors say it
    check = _training_config_check(doc)  # None: an unknown config, reported by _cross_field
    error = check(_job_overrides(doc)) if check else None
    return [("$.training.overrides", f"the trainer refuses it: {error}")] if error else []


def _check_evaluation_config(ev: dict) -> list[tuple[str, str]]:
    """The evaluation job's config as the job will load it (its ``--set`` arguments through
    its own loader), so a value it would refuse at start-up (``thresholds.max_p_value: 0``)
    is refused here with the job's message."""
    from codetune.evaluate.config import load_from_arguments

    try:
        load_from_arguments(evaluation_arguments(ev))
    except CodetuneError as e:
        return [("$.evaluation", f"the evaluation job refuses it: {e}")]
    return []


def evaluation_arguments(ev: dict) -> list[str]:
    """The evaluate job's container arguments: the run input's evaluation settings as the
    ``--set key=value`` overrides of its ``EvalConfig``."""
    from codetune.evaluate.config import run_input_overrides, set_arguments

    return set_arguments(run_input_overrides(ev))


def _resolve_instance(doc: dict) -> tuple[str | None, str, str | None]:
    """(instance type, "auto"|"input", error message or None) from the planner."""
    tr = doc["training"]
    requested = tr["instanceType"]
    source = "auto" if requested == "auto" else "input"
    from codetune.plan import check_instance, recommend_instance

    overrides = _training_overrides(tr)
    if doc["baseModel"].startswith("s3://"):
        # The planner reads a model's size from its id or config.json, never from S3.
        if requested == "auto":
            return (
                None,
                source,
                '"auto" cannot size a base model in S3 (the planner reads no weights); give '
                "training.instanceType explicitly, e.g. ml.g5.2xlarge",
            )
        return requested, source, None
    try:
        if requested == "auto":
            return recommend_instance(doc["baseModel"], tr["config"], overrides), source, None
        check_instance(requested, doc["baseModel"], tr["config"], overrides)
        return requested, source, None
    except CodetuneError as e:
        return None, source, f"the planner refuses it: {e}"


def _training_overrides(tr: dict) -> dict:
    """Dotted overrides sent to the trainer: the input's overrides plus its rl section."""
    merged = dict(tr.get("overrides") or {})
    for k, v in (tr.get("rl") or {}).items():
        merged[f"rl.{k}"] = v
    return merged


def _job_overrides(doc: dict) -> dict:
    """The training job's overrides: ``_training_overrides`` plus ``base_model`` when the base
    model is a Hugging Face id (or ``embedded``), so the job trains ``baseModel`` and not the
    config's own ``base_model``. An S3 base model reaches the job as the ``model`` channel
    instead (the trainer prefers those weights), so it is not an override."""
    merged = _training_overrides(doc["training"])
    base = doc["baseModel"]
    if not base.startswith("s3://"):
        merged["base_model"] = base
    return merged


# --------------------------------------------------------------------------- build


def _join(prefix: str, *parts: str) -> str:
    return prefix.rstrip("/") + "/" + "".join(p.strip("/") + "/" for p in parts)


def _build(
    doc: dict,
    execution_name: str,
    rid: str,
    jobs: dict,
    artifact_bucket: str,
    local: bool,
    model_package_group: str,
    instance_type: str,
    source: str,
    codebase_fingerprint: Callable[[str], str] | None = None,
    endpoint_name: str | None = None,
    max_training_seconds: int | None = None,
    job_stack: JobStack | None = None,
) -> RunRequest:
    """The ``RunRequest`` of a valid, default-filled run input."""
    root = _artifact_root(artifact_bucket, local)
    data = doc["data"]
    cache_key = _prepare_cache_key(data, doc["prepare"]["config"], codebase_fingerprint)
    paths = _run_paths(root, rid, data.get("dataset"), cache_key, jobs["train"])
    tr = doc["training"]
    max_wait = _max_wait(tr, max_training_seconds)
    hyperparameters = to_hyperparameters(tr["config"], _job_overrides(doc))
    job = None
    if job_stack is not None:
        job = _training_job(doc, rid, jobs["train"], paths, instance_type, max_wait, job_stack)
    base = doc["baseModel"]
    return RunRequest(
        schema_version=SCHEMA_VERSION,
        run_id=rid,
        execution_name=execution_name,
        local=local,
        base_model=BaseModelRef(id=base, s3_uri=base if base.startswith("s3://") else None),
        data=DataRef(
            codebase_s3_uri=data.get("codebase"),
            dataset_s3_uri=paths.dataset,
            skip_prepare=bool(data.get("dataset")),
            prepare_cache_key=cache_key,
        ),
        paths=paths,
        jobs=JobNames(
            prepare=jobs["prepare"],
            merge=jobs["merge"],
            train=jobs["train"],
            evaluate=jobs["evaluate"],
            model=jobs["model"],
            endpoint_config=jobs["endpointConfig"],
            base_model=jobs["baseModel"],
        ),
        training=_training_spec(tr, instance_type, source, hyperparameters, max_wait, job),
        prepare=_prepare_spec(doc["prepare"]),
        evaluation=_evaluation_spec(doc["evaluation"], instance_type),
        registration=RegistrationSpec(
            auto_approve=doc["registration"]["autoApprove"],
            model_package_group=model_package_group,
        ),
        deployment=_deployment_spec(doc["deployment"], endpoint_name, rid),
        tuning=_tuning_spec(
            doc.get("tuning"), rid, jobs["tune"], hyperparameters, max_training_seconds
        ),
    )


def _artifact_root(artifact_bucket: str, local: bool) -> str:
    """``s3://<bucket>``, or a local run's ``file://`` root."""
    if not local:
        return f"s3://{artifact_bucket}"
    return artifact_bucket if artifact_bucket.startswith("file://") else f"file://{artifact_bucket}"


def _prepare_cache_key(
    data: dict, prepare_config: dict, codebase_fingerprint: Callable[[str], str] | None
) -> str:
    """sha256 of what a prepared dataset is made from: the codebase (its URI and, when a
    fingerprint is given, its contents) and the prepare config."""
    cache_src = {"codebase": data.get("codebase"), "config": prepare_config}
    if data.get("codebase") and codebase_fingerprint is not None:
        cache_src["contents"] = codebase_fingerprint(data["codebase"])
    return hashlib.sha256(json.dumps(cache_src, sort_keys=True).encode()).hexdigest()


def _run_paths(
    root: str, rid: str, dataset: str | None, cache_key: str, train_job: str
) -> RunPaths:
    """Where the run's data, checkpoints, adapter and report live."""
    run_prefix = _join(root, "runs", rid)
    # Prepared datasets and checkpoints live under top-level prefixes: S3 lifecycle rules
    # match key prefixes only, and the stack expires datasets/ and checkpoints/. A dataset is
    # keyed by what it is made from, so the same codebase + prepare config reuses it.
    dataset_uri = dataset.rstrip("/") + "/" if dataset else _join(root, "datasets", cache_key)
    output = _join(run_prefix, "output")
    eval_prefix = _join(run_prefix, "eval")
    return RunPaths(
        run_prefix=run_prefix,
        dataset=dataset_uri,
        # per run: MergeDataset reads the whole prefix, and an earlier run with more
        # instances would have left shards (algo-N/) this run does not overwrite
        dataset_shards=f"{dataset_uri.rstrip('/')}-shards/{rid}/",
        checkpoints=_join(root, "checkpoints", rid),
        output=output,
        eval=eval_prefix,
        # the first attempt's; the state machine passes the actual one ($.training)
        model_data=f"{output}{naming.attempt_name(train_job)}/output/model.tar.gz",
        report=f"{eval_prefix}report.json",
    )


def _max_wait(tr: dict, max_training_seconds: int | None) -> int | None:
    """A spot job's max wait: the input's, else twice the runtime, within SageMaker's ceiling
    and the training task's; None without spot."""
    if not tr["spot"]:
        return None
    ceiling = min(MAX_SECONDS, max_training_seconds or MAX_SECONDS)
    return tr["maxWaitSeconds"] or default_max_wait(tr["maxRuntimeSeconds"], ceiling)


def _training_job(
    doc: dict,
    rid: str,
    train_job: str,
    paths: RunPaths,
    instance_type: str,
    max_wait: int | None,
    job_stack: JobStack,
) -> dict:
    """The training job's whole CreateTrainingJob input (its first attempt's name)."""
    tr = doc["training"]
    base = doc["baseModel"]
    spec = TrainingJobSpec(
        job_name=naming.attempt_name(train_job),  # the first attempt's
        run_id=rid,
        config=tr["config"],
        overrides=_job_overrides(doc),
        dataset=paths.dataset,
        output=paths.output,
        instance_type=instance_type,
        instance_count=tr["instanceCount"],
        volume_size_gb=tr["volumeSizeGb"],
        max_runtime_seconds=tr["maxRuntimeSeconds"],
        spot=tr["spot"],
        max_wait_seconds=max_wait,
        # always: a spot job resumes from them, any job's progress survives a failure
        checkpoints=paths.checkpoints,
        model=base if base.startswith("s3://") else None,
    )
    return training_job(spec, job_stack)


def _training_spec(
    tr: dict,
    instance_type: str,
    source: str,
    hyperparameters: dict,
    max_wait: int | None,
    job: dict | None,
) -> TrainingSpec:
    return TrainingSpec(
        config=tr["config"],
        overrides=tr["overrides"],
        hyperparameters=hyperparameters,
        instance_type=instance_type,
        instance_type_source=source,
        instance_count=tr["instanceCount"],
        spot=tr["spot"],
        max_runtime_seconds=tr["maxRuntimeSeconds"],
        max_wait_seconds=max_wait,
        volume_size_gb=tr["volumeSizeGb"],
        rl=tr["rl"],
        volume_kms_key=supports_kms_volume(instance_type),
        job=job,
    )


def _prepare_spec(prep: dict) -> PrepareSpec:
    return PrepareSpec(
        instance_type=prep["instanceType"],
        instance_count=prep["instanceCount"],
        config=prep["config"],
        volume_kms_key=supports_kms_volume(prep["instanceType"]),
        arguments=prepare_arguments(prep["config"]),
        merge_arguments=["--merge", MERGE_INPUT, *prepare_arguments(prep["config"])],
    )


def _evaluation_spec(ev: dict, training_instance_type: str) -> EvaluationSpec:
    """The evaluation job's spec; ``"auto"`` evaluates on the training instance type."""
    eval_type = training_instance_type if ev["instanceType"] == "auto" else ev["instanceType"]
    return EvaluationSpec(
        suites=list(ev["suites"]),
        limit=ev["limit"],
        thresholds=ev["thresholds"],
        instance_type=eval_type,
        volume_kms_key=supports_kms_volume(eval_type),
        compare_sft=ev["compareSft"],
        arguments=evaluation_arguments(ev),
    )


def _deployment_spec(dep: dict, endpoint_name: str | None, rid: str) -> DeploymentSpec:
    """The deployment's spec: the endpoint (the input's, else the stack's, else the local
    default) and its component names; the adapter is named after the run unless named."""
    endpoint = dep["endpointName"] or endpoint_name or DEFAULT_ENDPOINT_NAME
    adapter = dep["adapterName"] or rid
    base_component, adapter_component = naming.component_names(endpoint, adapter)
    return DeploymentSpec(
        enabled=dep["enabled"],
        endpoint_name=endpoint,
        adapter_name=adapter,
        instance_type=dep["instanceType"],
        instance_count=dep["instanceCount"],
        min_capacity=dep["minCapacity"],
        max_capacity=dep["maxCapacity"],
        invocations_per_instance=dep["invocationsPerInstance"],
        startup_health_check_timeout_seconds=dep["startupHealthCheckTimeoutSeconds"],
        model_data_download_timeout_seconds=dep["modelDataDownloadTimeoutSeconds"],
        mode=dep["mode"],
        base_component=base_component,
        adapter_component=adapter_component,
        base_scale_to_zero=dep["baseScaleToZero"],
    )


def _tuning_spec(
    section: dict | None,
    rid: str,
    job_name: str,
    hyperparameters: dict,
    max_training_seconds: int | None,
) -> TuningSpec | None:
    if not section:
        return None
    return TuningSpec(
        job_name=job_name,
        strategy=section["strategy"],
        max_jobs=tuning.max_jobs(section),
        max_parallel_jobs=section["maxParallelJobs"],
        early_stopping=section["earlyStopping"],
        ranges=section["ranges"],
        job_config=tuning.job_config(section, seed_of=rid, max_runtime=max_training_seconds),
        static_hyperparameters=hyperparameters,
    )


def _training_config_check(doc: dict) -> Callable[[dict], str | None] | None:
    """``overrides -> the trainer's error or None``: the training config loaded as the job
    loads it; None when the shipped configs are not here (a Lambda without them)."""
    name = doc["training"].get("config")
    known = known_training_configs()
    if not isinstance(name, str) or known is None or name not in known:
        return None
    from codetune.train.config import load_train_config

    def check(overrides: dict) -> str | None:
        try:
            load_train_config(name, overrides)
        except CodetuneError as e:
            return str(e)
        return None

    return check
