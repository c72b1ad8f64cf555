"""DeployEndpoint with inference components, run against moto plus the components double
(awscheck.components); every request any client sent is checked against botocore's input
shapes (awscheck.limits) — the double also refuses an invalid one as SageMaker would."""

from __future__ import annotations

import boto3
import pytest
from awscheck import limits
from awscheck.components import InferenceComponents
from awscheck.record import recording

from codetune.workflow import DeploymentFailed, validate_run_input
from codetune.workflow.deploy import (
    COMPONENT_DIMENSION,
    deploy_endpoint,
)
from codetune.workflow.smoke import smoke_test

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/codetune-endpoint"
ENDPOINT = "codetune-dev"
BASE = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
MUTATING = ("Create", "Update", "Delete", "Put", "Register", "Deregister")


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws

    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(var, value)
    double = InferenceComponents(region=REGION)
    with mock_aws(), double.installed(), recording() as calls:
        sm = boto3.client("sagemaker", region_name=REGION)
        sm.create_model_package_group(ModelPackageGroupName="codetune-dev")
        yield (
            double,
            calls,
            {
                "sagemaker": sm,
                "autoscaling": boto3.client("application-autoscaling", region_name=REGION),
                "cloudwatch": boto3.client("cloudwatch", region_name=REGION),
            },
        )


def _request(base_input, fake_planner, name: str, **deployment):
    base_input["deployment"] = {"instanceType": "ml.g4dn.xlarge", **deployment}
    return validate_run_input(
        base_input,
        execution_name=name,
        artifact_bucket="artifacts-bkt",
        allowed_buckets=["artifacts-bkt"],
        model_package_group="codetune-dev",
        stage="dev",
        endpoint_name=ENDPOINT,
    )


def _package(sm, request) -> str:
    from codetune.workflow.registry import serving_environment

    return sm.create_model_package(
        ModelPackageGroupName="codetune-dev",
        InferenceSpecification={
            "Containers": [
                {
                    "Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/inf@sha256:" + "b" * 64,
                    "ModelDataUrl": request.paths.model_data,
                    "Environment": serving_environment(request),
                }
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]


def _deploy_until_in_service(request, clients, steps: int = 10) -> list[dict]:
    """Call DeployEndpoint as the state machine does until InService; every output."""
    package = _package(clients["sagemaker"], request)
    out, outs = {"action": "start", "status": "NotStarted"}, []
    for _ in range(steps):
        out = deploy_endpoint(
            request,
            model_package_arn=package,
            role_arn=ROLE,
            kms_key_id=None,
            rollback_alarms=[],
            previous=out,
            **clients,
        )
        outs.append(out)
        if out["status"] == "InService":
            return outs
    raise AssertionError(f"not InService after {steps} steps: {outs}")


def _mutations(calls, since: int = 0) -> list[tuple[str, dict]]:
    """The mutating calls after ``since``, without the test's own package setup."""
    return [
        (c.operation, c.params)
        for c in calls[since:]
        if c.operation.startswith(MUTATING) and not c.operation.startswith("CreateModelPackage")
    ]


def _problems(calls) -> list[str]:
    return [p for c in calls for p in limits.problems(c.service, c.operation, c.params)]


def test_first_run_creates_endpoint_base_and_adapter_components(aws, base_input, fake_planner):
    # guards: the first run creates an endpoint whose variant has no model, the base component
    # (its own model: the image without the adapter) and the run's adapter component on it
    double, calls, clients = aws
    request = _request(base_input, fake_planner, "run-a")
    outs = _deploy_until_in_service(request, clients)
    assert [o["action"] for o in outs][:3] == ["created", "base-created", "waiting"]
    assert outs[-1]["action"] == "unchanged" and outs[-1]["autoscaling"] == "registered"
    ops = [op for op, _ in _mutations(calls)]
    assert ops[:4] == [
        "CreateEndpointConfig",
        "CreateEndpoint",
        "CreateModel",
        "CreateInferenceComponent",
    ]
    (config,) = [p for op, p in _mutations(calls) if op == "CreateEndpointConfig"]
    variant = config["ProductionVariants"][0]
    assert "ModelName" not in variant and config["ExecutionRoleArn"] == ROLE
    assert variant["ManagedInstanceScaling"]["MinInstanceCount"] == 1
    (model,) = [p for op, p in _mutations(calls) if op == "CreateModel"]
    assert "ModelDataUrl" not in model["PrimaryContainer"]
    assert model["PrimaryContainer"]["Environment"]["CODETUNE_BASE_MODEL"] == BASE
    # no adapter at start: vLLM's LoRA slots are sized for the shipped configs' ranks and more
    assert model["PrimaryContainer"]["Environment"]["CODETUNE_VLLM_MAX_LORA_RANK"] == "64"
    base = double.components[f"{ENDPOINT}-base"]
    adapter = double.components[request.deployment.adapter_component]
    assert base.specification["ModelName"] == request.jobs.base_model and base.copies == 1
    assert adapter.base == base.name
    assert adapter.specification["Container"]["ArtifactUrl"] == request.paths.model_data
    target = double.targets[f"inference-component/{base.name}"]
    assert (target["ScalableDimension"], target["MinCapacity"]) == (COMPONENT_DIMENSION, 1)
    assert _problems(calls) == []


def test_second_run_adds_its_adapter_and_leaves_the_base_alone(aws, base_input, fake_planner):
    # guards: a later run creates only its adapter component: no endpoint, config, model or
    # base-component change (no Update/Delete of the base, no second CreateEndpoint)
    double, calls, clients = aws
    first = _request(base_input, fake_planner, "run-a")
    _deploy_until_in_service(first, clients)
    base_before = dict(vars(double.components[f"{ENDPOINT}-base"]))
    since = len(calls)
    second = _request(base_input, fake_planner, "run-b")
    outs = _deploy_until_in_service(second, clients)
    assert outs[0]["action"] == "adapter-created"
    mutations = _mutations(calls, since)
    assert [op for op, _ in mutations] == ["CreateInferenceComponent"]
    assert mutations[0][1]["Specification"]["BaseInferenceComponentName"] == f"{ENDPOINT}-base"
    assert not any(
        f"{ENDPOINT}-base" in (p.get("InferenceComponentName", ""), p.get("ResourceId", ""))
        for op, p in mutations
    )
    assert vars(double.components[f"{ENDPOINT}-base"]) == base_before
    assert set(double.components) == {
        f"{ENDPOINT}-base",
        first.deployment.adapter_component,
        second.deployment.adapter_component,
    }
    assert _problems(calls) == []


def test_same_adapter_name_replaces_its_artifact(aws, base_input, fake_planner):
    # guards: a run deploying an adapter name that exists updates that component in place
    # (UpdateInferenceComponent with the new ArtifactUrl), never creates a second one
    double, calls, clients = aws
    first = _request(base_input, fake_planner, "run-a", adapterName="svc")
    _deploy_until_in_service(first, clients)
    since = len(calls)
    second = _request(base_input, fake_planner, "run-b", adapterName="svc")
    assert second.deployment.adapter_component == first.deployment.adapter_component
    outs = _deploy_until_in_service(second, clients)
    assert outs[0]["action"] == "updated"
    mutations = _mutations(calls, since)
    assert [op for op, _ in mutations] == ["UpdateInferenceComponent"]
    assert mutations[0][1]["InferenceComponentName"] == f"{ENDPOINT}-svc"
    spec = double.components[f"{ENDPOINT}-svc"].specification
    assert spec["Container"]["ArtifactUrl"] == second.paths.model_data
    assert _problems(calls) == []


def test_an_update_rolled_back_is_deployment_failed(aws, base_input, fake_planner):
    # guards: SageMaker rolling this run's artifact update back (the component InService with
    # the old artifact after Updating) fails the deployment instead of updating again
    double, _, clients = aws
    _deploy_until_in_service(
        _request(base_input, fake_planner, "run-a", adapterName="svc"), clients
    )
    second = _request(base_input, fake_planner, "run-b", adapterName="svc")
    package = _package(clients["sagemaker"], second)
    kw = dict(
        model_package_arn=package, role_arn=ROLE, kms_key_id=None, rollback_alarms=[], **clients
    )
    out = deploy_endpoint(second, previous={"action": "start"}, **kw)
    assert out["action"] == "updated"
    component = double.components[f"{ENDPOINT}-svc"]
    old = dict(
        component.specification, Container={"ArtifactUrl": "s3://artifacts-bkt/runs/run-a/x.tar.gz"}
    )
    component.specification = old  # still Updating: the next look sees it in progress
    out = deploy_endpoint(second, previous=out, **kw)
    assert (out["action"], out.get("updating")) == ("waiting", True)
    component.status = "InService"
    with pytest.raises(DeploymentFailed, match="rolled the update back"):
        deploy_endpoint(second, previous=out, **kw)


def test_a_different_base_model_is_refused(aws, base_input, fake_planner):
    # guards: an adapter trained on another base model is not attached to this base
    _, _, clients = aws
    _deploy_until_in_service(_request(base_input, fake_planner, "run-a"), clients)
    base_input["baseModel"] = "Qwen/Qwen2.5-Coder-7B-Instruct"
    other = _request(base_input, fake_planner, "run-b")
    with pytest.raises(DeploymentFailed, match="serves base model 'Qwen/Qwen2.5-Coder-1.5B"):
        _deploy_until_in_service(other, clients)


def test_failed_adapter_component_of_this_run_fails_the_deployment(aws, base_input, fake_planner):
    # guards: this run's adapter component going Failed ends the deployment with its reason
    double, _, clients = aws
    request = _request(base_input, fake_planner, "run-a")
    package = _package(clients["sagemaker"], request)
    kw = dict(
        model_package_arn=package, role_arn=ROLE, kms_key_id=None, rollback_alarms=[], **clients
    )
    out = {"action": "start"}
    while out.get("action") != "adapter-created":
        out = deploy_endpoint(request, previous=out, **kw)
    double.fail(request.deployment.adapter_component, "adapter rank 128 > max_lora_rank")
    with pytest.raises(DeploymentFailed, match="max_lora_rank"):
        deploy_endpoint(request, previous=out, **kw)


def test_scale_to_zero_registers_min_zero_and_the_from_zero_alarm(aws, base_input, fake_planner):
    # guards: baseScaleToZero lets the base and the instances go to zero and adds the step
    # policy + NoCapacityInvocationFailures alarm that brings the first copy back
    double, calls, clients = aws
    request = _request(base_input, fake_planner, "run-a", baseScaleToZero=True)
    _deploy_until_in_service(request, clients)
    base = f"inference-component/{ENDPOINT}-base"
    assert double.targets[base]["MinCapacity"] == 0
    assert {name for rid, name in double.policies if rid == base} == {
        "codetune-invocations-per-copy",
        "codetune-scale-out-from-zero",
    }
    alarm = clients["cloudwatch"].describe_alarms()["MetricAlarms"][0]
    assert alarm["MetricName"] == "NoCapacityInvocationFailures"
    assert alarm["AlarmActions"] == [
        double.policies[(base, "codetune-scale-out-from-zero")]["PolicyARN"]
    ]
    (config,) = [p for op, p in _mutations(calls) if op == "CreateEndpointConfig"]
    assert config["ProductionVariants"][0]["ManagedInstanceScaling"]["MinInstanceCount"] == 0
    assert _problems(calls) == []


def test_single_model_mode_still_deploys_one_model(aws, base_input, fake_planner):
    # guards: deployment.mode single-model keeps the endpoint-per-model path: the variant
    # names the run's model and no inference component is made
    double, calls, clients = aws
    request = _request(base_input, fake_planner, "run-a", mode="single-model")
    outs = _deploy_until_in_service(request, clients)
    assert outs[0]["action"] == "created"
    (config,) = [p for op, p in _mutations(calls) if op == "CreateEndpointConfig"]
    assert config["ProductionVariants"][0]["ModelName"] == request.jobs.model
    assert double.components == {}
    assert _problems(calls) == []


def test_a_single_model_endpoint_is_not_given_components(aws, base_input, fake_planner):
    # guards: components mode on an endpoint made by single-model mode stops with what to do
    _, _, clients = aws
    _deploy_until_in_service(
        _request(base_input, fake_planner, "run-a", mode="single-model"), clients
    )
    with pytest.raises(DeploymentFailed, match='set deployment.mode to "single-model"'):
        _deploy_until_in_service(_request(base_input, fake_planner, "run-b"), clients)


def _answers(*bodies) -> None:
    import json

    import requests

    results = [{"Body": json.dumps(b), "ContentType": "application/json",
                "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""} for b in bodies]  # fmt: skip
    requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"results": results, "region": REGION},
    )


def _chat(model: str) -> dict:
    return {"object": "chat.completion", "model": model,
            "choices": [{"message": {"role": "assistant", "content": "return a + b"}}]}  # fmt: skip


def test_smoke_test_addresses_the_components(aws, base_input, fake_planner):
    # guards: the smoke test invokes the base component (as "base") and the adapter component
    # (no model named: SageMaker's header names the adapter) and reports who answered
    double, calls, clients = aws
    request = _request(base_input, fake_planner, "run-a")
    _deploy_until_in_service(request, clients)
    _answers(_chat(BASE), _chat("ic-adapter-7f3a"), [{"generated_text": "return a + b"}])
    out = smoke_test(request, boto3.client("sagemaker-runtime", region_name=REGION))
    assert out["adapterModel"] == "ic-adapter-7f3a"
    adapter = request.deployment.adapter_component
    assert double.invoked == [f"{ENDPOINT}-base", adapter, adapter]
    assert _problems(calls) == []


def test_smoke_test_refuses_the_base_answering_the_adapter_component(aws, base_input, fake_planner):
    # guards: an adapter component answered by the base model is a silent fallback: the run fails
    from codetune.workflow import SmokeTestFailed

    _, _, clients = aws
    request = _request(base_input, fake_planner, "run-a")
    _deploy_until_in_service(request, clients)
    _answers(_chat(BASE), _chat(BASE), [{"generated_text": "x"}])
    with pytest.raises(SmokeTestFailed, match="silent fallback to the base model"):
        smoke_test(request, boto3.client("sagemaker-runtime", region_name=REGION))


def test_the_double_refuses_what_sagemaker_refuses(aws):
    # guards the double itself: a component name with an underscore (botocore's pattern) and
    # an adapter with compute of its own are refused with ValidationException
    from botocore.exceptions import ClientError

    _, _, clients = aws
    sm = clients["sagemaker"]
    with pytest.raises(ClientError, match="does not match"):
        sm.describe_inference_component(InferenceComponentName="bad_name")
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.create_inference_component(
            InferenceComponentName="x-adapter",
            EndpointName="nope",
            Specification={"BaseInferenceComponentName": "x-base",
                           "Container": {"ArtifactUrl": "s3://b/a.tar.gz"}},
        )  # fmt: skip
