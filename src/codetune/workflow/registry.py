"""RegisterAdapter: one Model Registry package per run in the stage's package group."""

from __future__ import annotations

import hashlib
import json
import re

from botocore.exceptions import ClientError

from codetune.train.hyperparameters import decode_tuned_value
from codetune.workflow import naming
from codetune.workflow.aws import aws_call, call, classify, is_not_found
from codetune.workflow.errors import AwsRequestFailed, InputNotFound, InvalidEvent
from codetune.workflow.storage import read_bytes

ECR_URI = re.compile(
    r"^(?P<registry>\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?)/(?P<repo>[^:@]+)"
    r"(?::(?P<tag>[^@]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def image_by_digest(image_uri: str, ecr) -> str:
    """``registry/repo@sha256:...`` for an ECR image URI given by tag or digest.

    Registering by digest pins the exact image bytes (a tag can be moved later).
    """
    m = ECR_URI.match(image_uri)
    if not m:
        raise InvalidEvent(f"inference image {image_uri!r} is not an ECR image URI")
    if m.group("digest"):
        return f"{m.group('registry')}/{m.group('repo')}@{m.group('digest')}"
    if not m.group("tag"):
        raise InvalidEvent(f"inference image {image_uri!r} has neither a tag nor a digest")
    resp = call(
        "ecr:DescribeImages",
        ecr.describe_images,
        repositoryName=m.group("repo"),
        imageIds=[{"imageTag": m.group("tag")}],
    )
    details = resp.get("imageDetails") or []
    if not details:
        raise InputNotFound(f"inference image {image_uri} not found in ECR")
    return f"{m.group('registry')}/{m.group('repo')}@{details[0]['imageDigest']}"


def manifest_sha256(request, s3) -> str:
    """SHA-256 of the dataset's manifest.json bytes (lineage: which data trained this)."""
    return hashlib.sha256(read_bytes(request.paths.dataset + "manifest.json", s3)).hexdigest()


def approval_status(passed: bool, auto_approve: bool) -> str:
    """Approved only when the gate passed and the input allows auto-approval."""
    if not passed:
        return "Rejected"
    return "Approved" if auto_approve else "PendingManualApproval"


def _existing_package(sm, group: str, run_id: str) -> dict | None:
    """The package this run already registered (a re-run registers nothing new)."""
    with aws_call("sagemaker:ListModelPackages"):
        resp = sm.list_model_packages(
            ModelPackageGroupName=group,
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=50,
        )
    for summary in resp.get("ModelPackageSummaryList", []):
        arn = summary["ModelPackageArn"]
        desc = call(
            "sagemaker:DescribeModelPackage", sm.describe_model_package, ModelPackageName=arn
        )
        if desc.get("CustomerMetadataProperties", {}).get("runId") == run_id:
            return desc
    return None


def tuning_metadata(request, training: dict | None) -> dict[str, str]:
    """What the package records of a tuned run: the best trial's training job and the values
    it was given for the tuned keys (``{}`` without tuning)."""
    if request.tuning is None or not training:
        return {}
    hp = training.get("hyperparameters") or {}
    tuned = {k: decode_tuned_value(v) for k, v in hp.items() if k in request.tuning.ranges}
    return {
        "tuningJob": request.tuning.job_name,
        "bestTrainingJob": training.get("jobName", ""),
        "tunedHyperparameters": tuned_values_text(tuned),
    }


# CreateModelPackage.CustomerMetadataProperties values: letters, digits, spaces and _.:/=+-@
_METADATA_OTHER = re.compile(r"[^\w\s.:/=+\-@]")


def tuned_values_text(tuned: dict) -> str:
    """``lora.rank=32 learning_rate=0.0003``: the tuned values in the characters a model
    package's metadata allows (JSON's braces, quotes and commas are refused)."""
    pairs = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(tuned.items())]
    return _METADATA_OTHER.sub("_", " ".join(pairs))


def register_adapter(
    request,
    *,
    gate,
    model_data_url: str,
    training: dict | None = None,
    inference_image_uri: str,
    image_git_revision: str,
    sagemaker,
    s3,
    ecr,
) -> dict:
    """Create the run's model package (idempotent per runId).

    Returns ``{"modelPackageArn", "approvalStatus", "deploy", "created"}``; ``deploy`` is
    True when the package is approved and the input enables deployment.
    """
    group = request.registration.model_package_group
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=group)
    except ClientError as e:
        if is_not_found(e):
            raise AwsRequestFailed(
                f"model package group {group!r} does not exist; the stack creates it "
                "(deploy the stack for this stage)"
            ) from e
        raise classify(e, "sagemaker:DescribeModelPackageGroup") from e
    status = approval_status(gate.passed, request.registration.auto_approve)
    existing = _existing_package(sagemaker, group, request.run_id)
    if existing:
        arn, created = existing["ModelPackageArn"], False
        status = existing.get("ModelApprovalStatus", status)
    else:
        image = image_by_digest(inference_image_uri, ecr)
        dep = request.deployment
        metadata = {
            "runId": request.run_id,
            "executionName": request.execution_name,
            "baseModel": request.base_model.id,
            "datasetManifestSha256": manifest_sha256(request, s3),
            "imageGitRevision": image_git_revision,
            "adapterName": dep.adapter_name,
            "trainingConfig": request.training.config,
            **tuning_metadata(request, training),
        }
        resp = call(
            "sagemaker:CreateModelPackage",
            sagemaker.create_model_package,
            ModelPackageGroupName=group,
            ModelPackageDescription=f"codetune adapter {dep.adapter_name} on {request.base_model.id}"[
                :1000
            ],
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": image,
                        "ModelDataUrl": model_data_url,
                        "Environment": serving_environment(request),
                    }
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json", "text/event-stream"],
                "SupportedRealtimeInferenceInstanceTypes": [dep.instance_type],
            },
            ModelMetrics={
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": gate.report_uri}
                }
            },
            CustomerMetadataProperties={k: str(v)[:256] for k, v in metadata.items()},
            ModelApprovalStatus=status,
            ClientToken=naming.client_token(request.run_id),
        )
        arn, created = resp["ModelPackageArn"], True
    return {
        "modelPackageArn": arn,
        "approvalStatus": status,
        "deploy": status == "Approved" and request.deployment.enabled,
        "created": created,
    }


# Environment variables of the inference container. Their names are the serving area's
# contract (codetune.serve); kept here as the values the registry records.
ENV_BASE_MODEL = "CODETUNE_BASE_MODEL"
ENV_ADAPTER_NAME = "CODETUNE_ADAPTER_NAME"
ENV_INSTANCE_TYPE = "CODETUNE_INSTANCE_TYPE"


def serving_environment(request) -> dict[str, str]:
    """Container environment: which base model to load, the adapter's served name, and the
    instance type (SageMaker does not tell a hosting container; ``serve`` refuses to start on
    a GPU type without usable CUDA rather than serve on its CPU)."""
    return {
        ENV_BASE_MODEL: request.base_model.s3_uri or request.base_model.id,
        ENV_ADAPTER_NAME: request.deployment.adapter_name,
        ENV_INSTANCE_TYPE: request.deployment.instance_type,
    }
