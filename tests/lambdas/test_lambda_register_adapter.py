"""RegisterAdapter handler: one model package per run, by image digest, with lineage."""

from __future__ import annotations

import json

import pytest
from lambda_harness import ACCOUNT, REGION, load_handler, put_json, with_request

from codetune.serve.config import ENV_INSTANCE_TYPE
from codetune.workflow import AwsRequestFailed, InputNotFound, InvalidEvent
from codetune.workflow.aws import client
from codetune.workflow.registry import approval_status

handler = load_handler("register_adapter")
REPO_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/codetune-inference"


@pytest.fixture
def image(aws, monkeypatch):
    ecr = client("ecr")
    ecr.create_repository(repositoryName="codetune-inference")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": "sha256:" + "a" * 64},
    }
    ecr.put_image(
        repositoryName="codetune-inference", imageManifest=json.dumps(manifest), imageTag="v1"
    )
    digest = ecr.describe_images(repositoryName="codetune-inference")["imageDetails"][0][
        "imageDigest"
    ]
    monkeypatch.setenv("INFERENCE_IMAGE_URI", f"{REPO_URI}:v1")
    monkeypatch.setenv("IMAGE_GIT_REVISION", "0123abc")
    return f"{REPO_URI}@{digest}"


def _manifest(request_doc) -> bytes:
    body = b'{"records": 120}'
    put_json(request_doc["paths"]["dataset"] + "manifest.json", json.loads(body))
    return json.dumps(json.loads(body)).encode()


def test_registers_package_with_lineage(image, request_doc, context):
    # guards: inference spec by digest, model data, report metrics, lineage metadata, approval
    import hashlib

    manifest = _manifest(request_doc)
    out = handler.lambda_handler(with_request("register_adapter", request_doc), context)
    assert out["approvalStatus"] == "Approved" and out["deploy"] is True and out["created"]
    pkg = client("sagemaker").describe_model_package(ModelPackageName=out["modelPackageArn"])
    container = pkg["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == image
    assert container["ModelDataUrl"] == request_doc["paths"]["modelData"]
    assert container["Environment"]["CODETUNE_ADAPTER_NAME"] == request_doc["runId"]
    # serve reads the instance type to refuse a GPU type without CUDA (codetune.serve.config)
    assert container["Environment"][ENV_INSTANCE_TYPE] == request_doc["deployment"]["instanceType"]
    assert pkg["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("eval/report.json")
    meta = pkg["CustomerMetadataProperties"]
    assert meta["runId"] == request_doc["runId"]
    assert meta["baseModel"] == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert meta["imageGitRevision"] == "0123abc"
    assert meta["datasetManifestSha256"] == hashlib.sha256(manifest).hexdigest()


def test_rerun_registers_nothing_new(image, request_doc, context):
    # guards: a retried RegisterAdapter returns the same package instead of a second version
    _manifest(request_doc)
    first = handler.lambda_handler(with_request("register_adapter", request_doc), context)
    again = handler.lambda_handler(with_request("register_adapter", request_doc), context)
    assert again["modelPackageArn"] == first["modelPackageArn"] and again["created"] is False
    pkgs = client("sagemaker").list_model_packages(ModelPackageGroupName="codetune-test")
    assert len(pkgs["ModelPackageSummaryList"]) == 1


def test_approval_follows_gate_and_input():
    # guards: approved only with a passed gate AND auto-approve
    assert approval_status(True, True) == "Approved"
    assert approval_status(True, False) == "PendingManualApproval"
    assert approval_status(False, True) == "Rejected"


def test_missing_manifest_is_input_not_found(image, request_doc, context):
    # guards: lineage is mandatory: no dataset manifest, no registration
    with pytest.raises(InputNotFound, match="manifest.json"):
        handler.lambda_handler(with_request("register_adapter", request_doc), context)


def test_missing_group_is_terminal(image, request_doc, context):
    # guards: a missing stage package group names the group and the fix
    request_doc["registration"]["modelPackageGroup"] = "no-such-group"
    with pytest.raises(AwsRequestFailed, match="'no-such-group' does not exist"):
        handler.lambda_handler(with_request("register_adapter", request_doc), context)


def test_event_without_gate_is_invalid_event(image, request_doc, context):
    # guards: malformed event names the field
    ev = with_request("register_adapter", request_doc)
    del ev["gate"]["passed"]
    with pytest.raises(InvalidEvent, match=r"event\.gate\.passed is missing"):
        handler.lambda_handler(ev, context)


def test_forty_character_run_id_registers_within_the_api_limits(image, context, fake_planner):
    # guards: run ids reach 40 characters and CreateModelPackage.ClientToken allows at most
    # 36 ([a-zA-Z0-9-]+); botocore does not check the maximum, the service would refuse it
    # after training and evaluation are paid for
    from awscheck.limits import problems
    from awscheck.record import recording
    from lambda_harness import BUCKET, event

    from codetune.workflow import validate_run_input

    name = "nightly-" + "x" * 32
    doc = validate_run_input(
        event("validate_request")["input"],
        execution_name=name,
        artifact_bucket=BUCKET,
        model_package_group="codetune-test",
        stage="test",
    ).to_dict()
    assert doc["runId"] == name and len(name) == 40
    _manifest(doc)
    with recording() as calls:
        from codetune.workflow.aws import reset_clients

        reset_clients()
        out = handler.lambda_handler(with_request("register_adapter", doc), context)
    assert out["created"]
    (create,) = [c for c in calls if c.operation == "CreateModelPackage"]
    assert problems("sagemaker", "CreateModelPackage", create.params) == []
    assert len(create.params["ClientToken"]) <= 36
