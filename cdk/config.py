"""Stage configuration: `cdk.json` context -> one frozen dataclass, read once in `app.py`.

Constructs never read context or the environment; they receive values from this object.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

# S3 key prefixes of the artifact bucket. The SageMaker role may touch only these, and the
# lifecycle rules expire checkpoints/ and datasets/ (lifecycle filters match key prefixes
# only, so expiring data needs them at the top level, not under runs/<runId>/).
RUNS_PREFIX = "runs/"
CHECKPOINTS_PREFIX = "checkpoints/"
DATASETS_PREFIX = "datasets/"
BASE_MODELS_PREFIX = "base-models/"
CODEBASES_PREFIX = "codebases/"  # codebases uploaded to the artifact bucket (read by prepare)
EVAL_KEYS = "runs/*/eval/*"  # what the evaluation job writes, and nothing else

# Task timeouts of the jobs other than training, and what the Lambdas/deploy loop need: the
# training task gets the rest of the state machine's timeout. PREPARE_HOURS is the whole
# preparation: PrepareDataset, or PrepareDatasetSharded then MergeDataset (MERGE_HOURS of it).
PREPARE_HOURS = 6
MERGE_HOURS = 2
EVALUATION_HOURS = 12
OTHER_STEPS_HOURS = 1

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class StageConfigError(ValueError):
    """The `cdk.json` stage context is missing, has unknown keys or wrong types."""


@dataclass(frozen=True)
class StageConfig:
    """Everything that differs between deployments of the stack (one `cdk.json` stage)."""

    stage: str = field(metadata={"help": "stage name, used in the stack name"})
    account: str | None = field(default=None, metadata={"help": "AWS account; None = CLI's"})
    region: str | None = field(default=None, metadata={"help": "AWS region; None = CLI's"})
    checkpoint_expiry_days: int = field(
        default=7, metadata={"help": "days until training checkpoints expire"}
    )
    dataset_expiry_days: int = field(
        default=30, metadata={"help": "days until prepared datasets expire"}
    )
    noncurrent_version_expiry_days: int = field(
        default=7, metadata={"help": "days overwritten object versions are kept"}
    )
    access_log_expiry_days: int = field(
        default=90, metadata={"help": "days S3 server access logs are kept"}
    )
    log_retention_days: int = field(
        default=30, metadata={"help": "CloudWatch Logs retention of Lambdas and the workflow"}
    )
    create_input_bucket: bool = field(
        default=True, metadata={"help": "create a bucket users upload codebases to"}
    )
    retain_data: bool = field(
        default=False, metadata={"help": "keep buckets and the key when the stack is deleted"}
    )
    vpc_subnet_ids: tuple[str, ...] = field(
        default=(), metadata={"help": "subnets for SageMaker jobs; empty = no VPC"}
    )
    vpc_security_group_ids: tuple[str, ...] = field(
        default=(), metadata={"help": "security groups for SageMaker jobs (with subnets)"}
    )
    model_package_group: str = field(
        default="codetune", metadata={"help": "Model Registry package group name"}
    )
    state_machine_timeout_hours: int = field(
        default=48, metadata={"help": "timeout of one whole workflow execution"}
    )
    latency_alarm_microseconds: int = field(
        default=20_000_000, metadata={"help": "endpoint p90 ModelLatency alarm threshold"}
    )
    error_alarm_threshold: int = field(
        default=5, metadata={"help": "endpoint Invocation5XXErrors per minute alarm threshold"}
    )
    endpoint_name: str | None = field(
        default=None,
        metadata={
            "help": "endpoint the rollback alarms watch (run input deployment.endpointName); "
            "None = codetune-<stage>, so stages sharing an account never share one"
        },
    )
    manage_registry_scanning: bool = field(
        default=False,
        metadata={
            "help": "set ECR basic scan-on-push for the CDK asset repositories (registry-wide "
            "singleton: at most one stage per account may set it)"
        },
    )
    lambda_reserved_concurrency: int | None = field(
        default=None,
        metadata={
            "help": "reserved concurrency of each glue Lambda; None = unreserved (new accounts "
            "often have a concurrency limit of 10, and Lambda keeps 10 unreserved)"
        },
    )

    @property
    def endpoint(self) -> str:
        """The stage's endpoint name (``endpoint_name``, else ``codetune-<stage>``)."""
        return self.endpoint_name or f"codetune-{self.stage}"

    @property
    def training_timeout_hours(self) -> int:
        """The training task's timeout: the state machine's, less the other steps'."""
        return (
            self.state_machine_timeout_hours - PREPARE_HOURS - EVALUATION_HOURS - OTHER_STEPS_HOURS
        )

    def validate(self) -> None:
        """Raise StageConfigError when values contradict each other."""
        for name in (
            "checkpoint_expiry_days",
            "dataset_expiry_days",
            "noncurrent_version_expiry_days",
            "access_log_expiry_days",
            "log_retention_days",
            "state_machine_timeout_hours",
        ):
            if getattr(self, name) < 1:
                raise StageConfigError(f"stage {self.stage!r}: {name} must be >= 1")
        if self.lambda_reserved_concurrency is not None and self.lambda_reserved_concurrency < 1:
            raise StageConfigError(
                f"stage {self.stage!r}: lambdaReservedConcurrency must be >= 1 or null"
            )
        if self.training_timeout_hours < 1:
            least = PREPARE_HOURS + EVALUATION_HOURS + OTHER_STEPS_HOURS + 1
            raise StageConfigError(
                f"stage {self.stage!r}: stateMachineTimeoutHours must be >= {least} (prepare "
                f"{PREPARE_HOURS} h, evaluation {EVALUATION_HOURS} h, the other steps "
                f"{OTHER_STEPS_HOURS} h, and at least 1 h of training)"
            )
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", self.endpoint):
            raise StageConfigError(
                f"stage {self.stage!r}: endpointName {self.endpoint!r} is not a valid "
                "SageMaker name"
            )
        if bool(self.vpc_subnet_ids) != bool(self.vpc_security_group_ids):
            raise StageConfigError(
                f"stage {self.stage!r}: set both vpcSubnetIds and vpcSecurityGroupIds, or neither"
            )
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", self.model_package_group):
            raise StageConfigError(
                f"stage {self.stage!r}: modelPackageGroup {self.model_package_group!r} is not a "
                "valid SageMaker name"
            )


def _snake(key: str) -> str:
    return _CAMEL.sub("_", key).lower()


def load_stage(context: dict[str, Any], stage: str) -> StageConfig:
    """Build the StageConfig for `stage` from the `stages` map of the cdk.json context.

    Raises StageConfigError for an unknown stage, unknown keys or wrongly typed values.
    """
    stages = context.get("stages") or {}
    if stage not in stages:
        raise StageConfigError(
            f"unknown stage {stage!r}; cdk.json defines {sorted(stages)} (use -c stage=NAME)"
        )
    known = {f.name: f for f in dataclasses.fields(StageConfig)}
    values: dict[str, Any] = {"stage": stage}
    for key, value in stages[stage].items():
        name = _snake(key)
        if name not in known or name == "stage":
            raise StageConfigError(f"stage {stage!r}: unknown key {key!r}")
        if isinstance(value, list):
            value = tuple(value)
        expected = known[name].type
        if not _type_ok(value, expected):
            raise StageConfigError(f"stage {stage!r}: {key}={value!r} is not {expected}")
        values[name] = value
    config = StageConfig(**values)
    config.validate()
    return config


def _type_ok(value: Any, annotation: str) -> bool:
    # Annotations are strings (from __future__ import annotations); the set used here is small.
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "str | None": lambda v: v is None or isinstance(v, str),
        "tuple[str, ...]": lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
    }
    return checks[annotation](value)
