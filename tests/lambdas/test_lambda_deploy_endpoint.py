"""DeployEndpoint in single-model mode: create, then autoscaling, then no-ops; blue/green
update with rollback alarms. Components mode (the default): one test through the handler
here, the rest in tests/workflow/test_workflow_deploy_components.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from lambda_harness import ACCOUNT, REGION, load_handler, with_request

from codetune.workflow import DeploymentFailed, InvalidEvent, RunRequest
from codetune.workflow.aws import client
from codetune.workflow.deploy import deploy_endpoint, endpoint_config_spec

handler = load_handler("deploy_endpoint")
ROLE = f"arn:aws:iam::{ACCOUNT}:role/codetune-sagemaker"
READ_ONLY = ("Describe", "List")


@pytest.fixture
def request_doc(request_doc):
    """The harness's request in single-model mode (this module's subject)."""
    return {**request_doc, "deployment": {**request_doc["deployment"], "mode": "single-model"}}


@pytest.fixture
def deploy_env(aws, monkeypatch, request_doc):
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("KMS_KEY_ID", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234")
    arn = client("sagemaker").create_model_package(
        ModelPackageGroupName="codetune-test",
        InferenceSpecification={
            "Containers": [{"Image": "img@sha256:" + "b" * 64, "ModelDataUrl": "s3://b/m.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    ev = with_request("deploy_endpoint", request_doc)
    ev["registration"]["modelPackageArn"] = arn
    return ev


@pytest.fixture
def mutations():
    """Names of every non-read AWS operation the code under test calls."""
    calls: list[str] = []

    def record(model, **_):
        if not model.name.startswith(READ_ONLY):
            calls.append(model.name)

    clients = [client("sagemaker"), client("application-autoscaling")]
    for c in clients:
        c.meta.events.register("before-call.*.*", record, unique_id="codetune-test-recorder")
    yield calls
    for c in clients:
        c.meta.events.unregister("before-call.*.*", unique_id="codetune-test-recorder")


def test_create_then_autoscale_then_noop(deploy_env, mutations, context):
    # guards: first pass creates, the InService pass adds autoscaling, a re-run changes nothing
    first = handler.lambda_handler(deploy_env, context)
    assert (first["action"], first["status"]) == ("created", "Creating")
    assert mutations == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    second = handler.lambda_handler({**deploy_env, "previous": first}, context)
    assert (second["action"], second["autoscaling"]) == ("unchanged", "registered")
    mutations.clear()
    third = handler.lambda_handler({**deploy_env, "previous": second}, context)
    assert (third["action"], third["autoscaling"]) == ("unchanged", "unchanged")
    assert mutations == []  # idempotent: the same input is a no-op
    policy = client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="sagemaker"
    )
    cfg = policy["ScalingPolicies"][0]["TargetTrackingScalingPolicyConfiguration"]
    assert cfg["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )


def test_endpoint_config_carries_timeouts_and_kms(deploy_env, context):
    # guards: startup/download timeouts on the variant; KMS only where the instance allows it
    handler.lambda_handler(deploy_env, context)
    cfg = client("sagemaker").describe_endpoint_config(
        EndpointConfigName=deploy_env["request"]["jobs"]["endpointConfig"]
    )
    variant = cfg["ProductionVariants"][0]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 1200
    assert "KmsKeyId" not in cfg  # ml.g4dn has NVMe instance storage: SageMaker refuses a key
    req = RunRequest.from_dict(
        {
            **deploy_env["request"],
            "deployment": {**deploy_env["request"]["deployment"], "instanceType": "ml.m5.xlarge"},
        }
    )
    assert endpoint_config_spec(req, "key-1")["KmsKeyId"] == "key-1"


def test_gpu_variants_run_on_the_driver_580_ami(deploy_env):
    # guards: the inference image's CUDA build needs NVIDIA driver 580, which only the
    # al2023 GPU 4.1 inference AMI has; CPU variants take no AMI version (refused there)
    from awscheck.limits import problems

    doc = deploy_env["request"]
    for instance_type, ami in (
        ("ml.g5.2xlarge", "al2023-ami-sagemaker-inference-gpu-4-1"),
        ("ml.g6e.xlarge", "al2023-ami-sagemaker-inference-gpu-4-1"),
        ("ml.p4d.24xlarge", "al2023-ami-sagemaker-inference-gpu-4-1"),
        ("ml.m5.xlarge", None),
        ("ml.inf2.xlarge", None),
    ):
        req = RunRequest.from_dict(
            {**doc, "deployment": {**doc["deployment"], "instanceType": instance_type}}
        )
        spec = endpoint_config_spec(req, "arn:aws:kms:us-east-1:123456789012:key/1")
        assert spec["ProductionVariants"][0].get("InferenceAmiVersion") == ami, instance_type
        assert problems("sagemaker", "CreateEndpointConfig", spec) == [], instance_type


def _simulate_update_endpoint(updates: list[dict]):
    """moto lacks UpdateEndpoint: apply it to moto's endpoint and record the arguments."""
    from moto.sagemaker.models import sagemaker_backends

    def update(params, **_):
        params = json.loads(params["body"])  # before-call sees the serialized JSON request
        updates.append(params)
        ep = sagemaker_backends[ACCOUNT][REGION].endpoints[params["EndpointName"]]
        ep.endpoint_config_name = params["EndpointConfigName"]
        ep.endpoint_status = "Updating"
        return SimpleNamespace(status_code=200, headers={}), {"EndpointArn": ep.arn}

    return update


def test_existing_endpoint_is_updated_blue_green(deploy_env, request_doc, context):
    # guards: an endpoint serving another run is updated with blue/green + rollback alarms
    sm = client("sagemaker")
    first = handler.lambda_handler(deploy_env, context)
    assert first["action"] == "created"
    other = dict(
        request_doc,
        runId="next-run",
        jobs={k: v.replace("nightly", "next") for k, v in request_doc["jobs"].items()},
    )
    updates: list[dict] = []
    sm.meta.events.register(
        "before-call.sagemaker.UpdateEndpoint",
        _simulate_update_endpoint(updates),
        unique_id="sim-update",
    )
    try:
        kwargs = dict(
            model_package_arn=deploy_env["registration"]["modelPackageArn"],
            role_arn=ROLE,
            kms_key_id=None,
            rollback_alarms=deploy_env["rollbackAlarms"],
            sagemaker=sm,
            autoscaling=client("application-autoscaling"),
        )
        out = deploy_endpoint(RunRequest.from_dict(other), **kwargs)
        assert (out["action"], out["status"]) == ("updated", "Updating")
        [params] = updates
        assert params["EndpointConfigName"] == other["jobs"]["endpointConfig"]
        policy = params["DeploymentConfig"]
        assert "BlueGreenUpdatePolicy" in policy
        assert [a["AlarmName"] for a in policy["AutoRollbackConfiguration"]["Alarms"]] == [
            "codetune-test-5xx",
            "codetune-test-latency",
        ]
        # SageMaker rolled back: the endpoint is InService on the old config again.
        from moto.sagemaker.models import sagemaker_backends

        ep = sagemaker_backends[ACCOUNT][REGION].endpoints[
            request_doc["deployment"]["endpointName"]
        ]
        ep.endpoint_config_name, ep.endpoint_status = (
            request_doc["jobs"]["endpointConfig"],
            "InService",
        )
        with pytest.raises(DeploymentFailed, match="rolled endpoint codetune-test back"):
            deploy_endpoint(RunRequest.from_dict(other), previous=out, **kwargs)
    finally:
        sm.meta.events.unregister("before-call.sagemaker.UpdateEndpoint", unique_id="sim-update")


def test_failed_endpoint_is_deployment_failed(deploy_env, context):
    # guards: the endpoint this run created going to Failed ends the run with SageMaker's reason
    from moto.sagemaker.models import sagemaker_backends

    first = handler.lambda_handler(deploy_env, context)
    ep = sagemaker_backends[ACCOUNT][REGION].endpoints["codetune-test"]
    ep.endpoint_status, ep.failure_reason = "Failed", "health check timed out"
    with pytest.raises(DeploymentFailed, match="health check timed out"):
        handler.lambda_handler({**deploy_env, "previous": first}, context)


def _other_run(request_doc: dict) -> dict:
    return dict(
        request_doc,
        runId="next-run",
        jobs={k: v.replace("nightly", "next") for k, v in request_doc["jobs"].items()},
    )


def test_failed_endpoint_of_an_earlier_run_is_deleted_and_recreated(
    deploy_env, request_doc, mutations, context
):
    # guards: an endpoint an earlier deployment left Failed no longer blocks every later one
    # ("DeleteEndpoint is the only operation that can be performed on a failed endpoint"):
    # the next run deletes it, waits for it to go, and creates it with its own config
    from moto.sagemaker.models import sagemaker_backends

    first = handler.lambda_handler(deploy_env, context)
    handler.lambda_handler({**deploy_env, "previous": first}, context)  # autoscaling on
    ep = sagemaker_backends[ACCOUNT][REGION].endpoints["codetune-test"]
    ep.endpoint_status, ep.failure_reason = "Failed", "instance failed health checks"
    nxt = {**deploy_env, "request": _other_run(request_doc)}
    mutations.clear()
    start = {"action": "start", "status": "NotStarted"}  # what StartDeployment passes
    out = handler.lambda_handler({**nxt, "previous": start}, context)
    assert (out["action"], out["status"]) == ("deleting", "Deleting")
    assert "UpdateEndpoint" not in mutations and mutations[-1] == "DeleteEndpoint"
    out = handler.lambda_handler({**nxt, "previous": out}, context)
    assert (out["action"], out["status"]) == ("created", "Creating")
    out = handler.lambda_handler({**nxt, "previous": out}, context)
    assert (out["action"], out["status"], out["autoscaling"]) == (
        "unchanged",
        "InService",
        "registered",
    )
    desc = client("sagemaker").describe_endpoint(EndpointName="codetune-test")
    assert desc["EndpointConfigName"] == nxt["request"]["jobs"]["endpointConfig"]


def test_event_without_package_is_invalid_event(deploy_env, context):
    # guards: malformed event names the field
    del deploy_env["registration"]["modelPackageArn"]
    with pytest.raises(InvalidEvent, match=r"event\.registration\.modelPackageArn is missing"):
        handler.lambda_handler(deploy_env, context)


def test_components_mode_through_the_handler(deploy_env, context):
    # guards: the handler passes what components mode needs (clients, role, previous): the
    # default mode reaches InService with base and adapter components on the endpoint
    from awscheck.components import InferenceComponents

    ev = {**deploy_env, "request": {**deploy_env["request"]}}
    ev["request"]["deployment"] = {**ev["request"]["deployment"], "mode": "components"}
    from codetune.workflow.aws import reset_clients

    double = InferenceComponents(region=REGION)
    with double.installed():
        reset_clients()  # the handler's clients are made inside, with the double
        out = {"action": "start", "status": "NotStarted"}
        for _ in range(8):
            out = handler.lambda_handler({**ev, "previous": out}, context)
            if out["status"] == "InService":
                break
    assert (out["action"], out["status"]) == ("unchanged", "InService")
    dep = ev["request"]["deployment"]
    assert set(double.components) == {dep["baseComponent"], dep["adapterComponent"]}
