"""Typed Lambda events and handler environments.

Each handler parses its event with one of these classes; a missing or wrong field raises
``InvalidEvent`` naming it. The CDK state machine builds the events with exactly these keys
(see docs/architecture.md, "Contracts").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from codetune.train.job import JobStack
from codetune.workflow.errors import InvalidEvent
from codetune.workflow.request import RunRequest
from codetune.workflow.schemas import load_schema

# Environment variable names the CDK stack sets on the Lambdas (one place).
ENV_ARTIFACT_BUCKET = "ARTIFACT_BUCKET"
ENV_ALLOWED_BUCKETS = "ALLOWED_BUCKETS"  # comma-separated, besides the artifact bucket
ENV_MODEL_PACKAGE_GROUP = "MODEL_PACKAGE_GROUP"
ENV_STAGE = "STAGE"
ENV_ENDPOINT_NAME = "ENDPOINT_NAME"  # the one endpoint the stack's rollback alarms watch
ENV_INFERENCE_IMAGE_URI = "INFERENCE_IMAGE_URI"
ENV_IMAGE_GIT_REVISION = "IMAGE_GIT_REVISION"
ENV_SAGEMAKER_ROLE_ARN = "SAGEMAKER_ROLE_ARN"
ENV_KMS_KEY_ID = "KMS_KEY_ID"
ENV_ROLLBACK_ALARMS = "ROLLBACK_ALARMS"  # comma-separated CloudWatch alarm names
ENV_TOPIC_ARN = "TOPIC_ARN"
ENV_MAX_TRAINING_SECONDS = "MAX_TRAINING_SECONDS"  # the training task's timeout
ENV_VPC_SUBNET_IDS = "VPC_SUBNET_IDS"  # comma-separated; the endpoint's VpcConfig
ENV_VPC_SECURITY_GROUP_IDS = "VPC_SECURITY_GROUP_IDS"
# ValidateRequest's: what it builds the training job's CreateTrainingJob input with
ENV_TRAINING_IMAGE_URI = "TRAINING_IMAGE_URI"
ENV_TRAINING_ROLE_ARN = "TRAINING_ROLE_ARN"


def validate_against(schema_name: str, doc: Any, where: str) -> None:
    """Raise InvalidEvent listing where ``doc`` violates ``schema_name``."""
    errors = sorted(
        Draft202012Validator(load_schema(schema_name)).iter_errors(doc), key=lambda e: e.path
    )
    if errors:
        lines = "; ".join(
            f"{where}{''.join(f'.{p}' for p in e.absolute_path)}: {e.message}" for e in errors[:10]
        )
        raise InvalidEvent(f"{where} does not follow {schema_name}: {lines}")


def _field(event: Mapping, key: str, kind: type | tuple, where: str = "event", required=True):
    if not isinstance(event, Mapping):
        raise InvalidEvent(f"{where} must be a JSON object, got {type(event).__name__}")
    if key not in event or event[key] is None:
        if required:
            raise InvalidEvent(f"{where}.{key} is missing")
        return None
    value = event[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidEvent(f"{where}.{key} must be {names}, got {type(value).__name__}")
    return value


def _env(name: str, environ: Mapping[str, str], required: bool = True) -> str | None:
    value = environ.get(name)
    if required and not value:
        raise InvalidEvent(f"environment variable {name} is not set (the stack sets it)")
    return value or None


def _names(raw: str | None) -> list[str]:
    return [x.strip() for x in (raw or "").split(",") if x.strip()]


def _request(event: Mapping) -> RunRequest:
    return RunRequest.from_dict(_field(event, "request", dict))


@dataclass(frozen=True)
class ValidateRequestEvent:
    """``{"input": <run input>, "executionName": "$$.Execution.Name"}``."""

    input: Any
    execution_name: str

    @classmethod
    def parse(cls, event: Mapping) -> ValidateRequestEvent:
        _field(event, "input", (dict, list, str, int, float, bool))
        return cls(input=event["input"], execution_name=_field(event, "executionName", str))


@dataclass(frozen=True)
class ValidateRequestEnv:
    artifact_bucket: str
    allowed_buckets: list[str]
    model_package_group: str
    stage: str | None
    endpoint_name: str | None = None
    max_training_seconds: int | None = None  # the TrainAdapter task's timeout
    # image, role, key and network of the training job (None: no CreateTrainingJob input is
    # built, as in a local run)
    job_stack: JobStack | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> ValidateRequestEnv:
        limit = _env(ENV_MAX_TRAINING_SECONDS, environ, required=False)
        if limit is not None and not limit.isdigit():
            raise InvalidEvent(f"{ENV_MAX_TRAINING_SECONDS}={limit!r} is not a number of seconds")
        image = _env(ENV_TRAINING_IMAGE_URI, environ, required=False)
        role = _env(ENV_TRAINING_ROLE_ARN, environ, required=False)
        if bool(image) != bool(role):
            raise InvalidEvent(
                f"set both {ENV_TRAINING_IMAGE_URI} and {ENV_TRAINING_ROLE_ARN} (the stack sets them)"
            )
        stack = None
        if image and role:
            stack = JobStack(
                image_uri=image,
                role_arn=role,
                key_arn=_env(ENV_KMS_KEY_ID, environ, required=False),
                subnet_ids=tuple(_names(environ.get(ENV_VPC_SUBNET_IDS))),
                security_group_ids=tuple(_names(environ.get(ENV_VPC_SECURITY_GROUP_IDS))),
            )
        return cls(
            job_stack=stack,
            max_training_seconds=int(limit) if limit else None,
            artifact_bucket=_env(ENV_ARTIFACT_BUCKET, environ),
            allowed_buckets=_names(environ.get(ENV_ALLOWED_BUCKETS)),
            model_package_group=_env(ENV_MODEL_PACKAGE_GROUP, environ),
            stage=_env(ENV_STAGE, environ, required=False),
            endpoint_name=_env(ENV_ENDPOINT_NAME, environ, required=False),
        )


@dataclass(frozen=True)
class QualityGateEvent:
    """``{"request": {...}, "reportUri": optional (default request.paths.report)}``."""

    request: RunRequest
    report_uri: str

    @classmethod
    def parse(cls, event: Mapping) -> QualityGateEvent:
        request = _request(event)
        uri = _field(event, "reportUri", str, required=False) or request.paths.report
        return cls(request=request, report_uri=uri)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    report_uri: str

    @classmethod
    def parse(cls, gate: Mapping, where: str = "event.gate") -> GateResult:
        reasons = _field(gate, "reasons", list, where)
        return cls(
            passed=_field(gate, "passed", bool, where),
            reasons=[str(r) for r in reasons],
            report_uri=_field(gate, "reportUri", str, where),
        )


@dataclass(frozen=True)
class RegisterAdapterEvent:
    """``{"request", "gate": <QualityGate output>, "modelDataUrl": optional, "training":
    optional}``.

    ``modelDataUrl`` is the training job's ``ModelArtifacts.S3ModelArtifacts``; default
    ``request.paths.modelData``.
    """

    request: RunRequest
    gate: GateResult
    model_data_url: str
    # the training task's result ({jobName, hyperparameters?}; with tuning, the best trial's)
    training: dict | None = None

    @classmethod
    def parse(cls, event: Mapping) -> RegisterAdapterEvent:
        request = _request(event)
        return cls(
            request=request,
            gate=GateResult.parse(_field(event, "gate", dict)),
            model_data_url=_field(event, "modelDataUrl", str, required=False)
            or request.paths.model_data,
            training=_field(event, "training", dict, required=False),
        )


@dataclass(frozen=True)
class RegisterAdapterEnv:
    inference_image_uri: str
    image_git_revision: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> RegisterAdapterEnv:
        return cls(
            inference_image_uri=_env(ENV_INFERENCE_IMAGE_URI, environ),
            image_git_revision=environ.get(ENV_IMAGE_GIT_REVISION) or "unknown",
        )


@dataclass(frozen=True)
class DeployEndpointEvent:
    """``{"request", "registration": {"modelPackageArn"}, "previous": optional, "rollbackAlarms": optional}``.

    ``previous`` is this state's own output from the previous pass of the wait loop (the
    state machine calls DeployEndpoint until ``status`` is InService); it lets a pass see
    that SageMaker rolled an update back.
    """

    request: RunRequest
    model_package_arn: str
    previous: dict | None
    rollback_alarms: list[str] | None

    @classmethod
    def parse(cls, event: Mapping) -> DeployEndpointEvent:
        reg = _field(event, "registration", dict)
        alarms = _field(event, "rollbackAlarms", list, required=False)
        return cls(
            request=_request(event),
            model_package_arn=_field(reg, "modelPackageArn", str, "event.registration"),
            previous=_field(event, "previous", dict, required=False),
            rollback_alarms=[str(a) for a in alarms] if alarms is not None else None,
        )


@dataclass(frozen=True)
class DeployEndpointEnv:
    sagemaker_role_arn: str
    kms_key_id: str | None
    rollback_alarms: list[str]
    # the stage's VPC, where the endpoint runs like the jobs (empty: no VPC)
    subnet_ids: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> DeployEndpointEnv:
        return cls(
            subnet_ids=_names(environ.get(ENV_VPC_SUBNET_IDS)),
            security_group_ids=_names(environ.get(ENV_VPC_SECURITY_GROUP_IDS)),
            sagemaker_role_arn=_env(ENV_SAGEMAKER_ROLE_ARN, environ),
            kms_key_id=_env(ENV_KMS_KEY_ID, environ, required=False),
            rollback_alarms=_names(environ.get(ENV_ROLLBACK_ALARMS)),
        )


@dataclass(frozen=True)
class SmokeTestEvent:
    """``{"request"}`` — endpoint and adapter names come from ``request.deployment``."""

    request: RunRequest

    @classmethod
    def parse(cls, event: Mapping) -> SmokeTestEvent:
        return cls(request=_request(event))


@dataclass(frozen=True)
class NotifyFailureEvent:
    """What the Catch passes: ``{"executionArn", "executionName", "state", "error": {"Error", "Cause"}}``."""

    execution_arn: str | None
    execution_name: str
    state: str
    error: str
    cause: str

    @classmethod
    def parse(cls, event: Mapping) -> NotifyFailureEvent:
        err = _field(event, "error", dict)
        return cls(
            execution_arn=_field(event, "executionArn", str, required=False),
            execution_name=_field(event, "executionName", str),
            state=_field(event, "state", str),
            error=_field(err, "Error", str, "event.error"),
            cause=_field(err, "Cause", str, "event.error", required=False) or "",
        )


@dataclass(frozen=True)
class NotifyFailureEnv:
    topic_arn: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> NotifyFailureEnv:
        return cls(topic_arn=_env(ENV_TOPIC_ARN, environ))
