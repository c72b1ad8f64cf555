"""The resolved run request: output of ValidateRequest, input of every later state.

Its JSON form (camelCase keys) is described by ``schemas/run-request.schema.json``;
``RunRequest.to_dict()`` produces it and ``RunRequest.from_dict()`` reads it back (handlers
receive it in their events).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class BaseModelRef:
    id: str  # "embedded", a Hugging Face id, or a local path; for S3 models the s3 URI
    s3_uri: str | None  # set when the weights come from S3 (the training job's model channel)


@dataclass(frozen=True)
class DataRef:
    codebase_s3_uri: str | None  # the codebase (locally also a path or stdlib:...)
    dataset_s3_uri: str  # where the prepared dataset is (or will be) — always set
    skip_prepare: bool  # True when the input named a prepared dataset
    prepare_cache_key: str  # sha256 of codebase URI + prepare config: step-caching key


@dataclass(frozen=True)
class RunPaths:
    run_prefix: str
    dataset: str
    dataset_shards: str  # a sharded prepare's per-instance outputs, merged into ``dataset``
    checkpoints: str
    output: str
    eval: str
    model_data: str  # where SageMaker puts the adapter: <output><trainJob>/output/model.tar.gz
    report: str  # <eval>report.json


@dataclass(frozen=True)
class JobNames:
    prepare: str
    merge: str
    train: str
    evaluate: str
    model: str
    endpoint_config: str
    base_model: str  # the base component's SageMaker model, when this run creates it


@dataclass(frozen=True)
class TrainingSpec:
    config: str
    overrides: dict
    hyperparameters: dict
    instance_type: str
    instance_type_source: str  # "auto" (planner) or "input"
    instance_count: int
    spot: bool
    max_runtime_seconds: int
    max_wait_seconds: int | None
    volume_size_gb: int
    rl: dict | None
    # False on instance types with NVMe instance storage (g5, p4d...): SageMaker refuses a
    # VolumeKmsKeyId there (the state machine then sends none; output stays KMS-encrypted)
    volume_kms_key: bool
    # the job's whole CreateTrainingJob input (codetune.train.job.training_job): TrainAdapter
    # sends it with the attempt's TrainingJobName; None when no stack is known (local runs)
    job: dict | None = None


@dataclass(frozen=True)
class PrepareSpec:
    instance_type: str
    instance_count: int
    config: dict
    volume_kms_key: bool  # as TrainingSpec.volume_kms_key
    # the prepare and MergeDataset jobs' ContainerArguments: the config as `--set key=value`
    # flags (an environment value is capped at 256 characters, an argument each)
    arguments: list = dataclasses.field(default_factory=list)
    merge_arguments: list = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class EvaluationSpec:
    suites: list
    limit: int | dict | None  # every problem suite's, or per suite (codetune.evaluate.config)
    thresholds: dict
    instance_type: str
    volume_kms_key: bool  # as TrainingSpec.volume_kms_key
    # also evaluate the SFT-only adapter a GRPO run keeps in <adapter>/sft/
    compare_sft: bool = False
    # the evaluate job's ContainerArguments: the EvalConfig keys above as `--set key=value`
    # flags, validated by the job's own loader (codetune.evaluate.config.set_arguments)
    arguments: list = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class RegistrationSpec:
    auto_approve: bool
    model_package_group: str


@dataclass(frozen=True)
class DeploymentSpec:
    enabled: bool
    endpoint_name: str
    adapter_name: str
    instance_type: str
    instance_count: int
    min_capacity: int
    max_capacity: int
    invocations_per_instance: int
    startup_health_check_timeout_seconds: int
    model_data_download_timeout_seconds: int
    # "components": the endpoint hosts a base-model inference component and one adapter
    # component per run; "single-model": one model per endpoint, blue/green per run
    mode: str = "components"
    base_component: str = ""  # <endpoint>-base (codetune.workflow.naming.component_name)
    adapter_component: str = ""  # <endpoint>-<adapterName>, valid and <= 63 characters
    base_scale_to_zero: bool = False  # the base component may scale to zero copies


@dataclass(frozen=True)
class TuningSpec:
    """Hyperparameter tuning instead of one training job (codetune.workflow.tuning)."""

    job_name: str  # HyperParameterTuningJobName base (<= 29 characters; attempts add -r<n>)
    strategy: str
    max_jobs: int
    max_parallel_jobs: int
    early_stopping: bool
    ranges: dict  # the input's ranges: dotted config key -> {type, min, max, scaling | values}
    # the HyperParameterTuningJobConfig block, taken whole by the tuning state
    job_config: dict
    # training.hyperparameters; the tuned keys are never among them (one place per key)
    static_hyperparameters: dict


@dataclass(frozen=True)
class RunRequest:
    schema_version: str
    run_id: str
    execution_name: str
    local: bool
    base_model: BaseModelRef
    data: DataRef
    paths: RunPaths
    jobs: JobNames
    training: TrainingSpec
    prepare: PrepareSpec
    evaluation: EvaluationSpec
    registration: RegistrationSpec
    deployment: DeploymentSpec
    tuning: TuningSpec | None = None  # None: one training job

    def to_dict(self) -> dict:
        """The JSON form (camelCase keys), valid against run-request.schema.json."""
        return _to_json(self)

    @classmethod
    def from_dict(cls, doc: dict) -> RunRequest:
        """Read the JSON form back; raises InvalidEvent naming the first wrong field."""
        from codetune.workflow.events import validate_against

        validate_against("run-request.schema.json", doc, "request")
        return _from_json(cls, doc)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _to_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_camel(f.name): _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_to_json(v) for v in obj]
    return obj


def _from_json(cls: type, doc: dict) -> Any:
    kwargs = {}
    for key, value in doc.items():
        name = _snake(key)
        # sections are one level deep; dict-valued fields (overrides, config, thresholds...)
        # below them are user data, kept as they are
        sub = _SUBTYPES.get(name) if cls is RunRequest else None
        kwargs[name] = _from_json(sub, value) if sub and value is not None else value
    return cls(**kwargs)


_SUBTYPES: dict[str, type] = {
    "base_model": BaseModelRef,
    "data": DataRef,
    "paths": RunPaths,
    "jobs": JobNames,
    "training": TrainingSpec,
    "prepare": PrepareSpec,
    "evaluation": EvaluationSpec,
    "registration": RegistrationSpec,
    "deployment": DeploymentSpec,
    "tuning": TuningSpec,
}
