"""Every AWS call of the workflow is allowed by the synthesized policies and well-formed.

The calls are recorded (awscheck.record) where the code makes them: the Lambdas in the moto
execution of the rendered state machine (several scenarios, short and maximal names, spot,
VPC, S3 base model, sharded prepare, a long prepare config), DeployEndpoint through create →
autoscaling → update → a Failed endpoint recovered, and `codetune train --remote`. The
SageMaker job requests are the state machine's Task parameters as moto's interpreter rendered
them for those runs. Each call, and each call AWS makes on a role's behalf because of one
(awscheck.iam.SERVICE_SIDE), is evaluated against the policies of the role that makes it;
every request is validated against botocore's input shapes and SageMaker's documented rules
(awscheck.limits).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from awscheck import iam, limits
from awscheck.record import Call, as_principal, recording
from render import ACCOUNT, REGION, rendered_definition
from test_execution import (
    GOOD_SMOKE,
    Scenario,
    _chat,
    _function_env,
    _input,
    _queue_endpoint_answers,
    _report,
    execute,
    handlers,  # noqa: F401 - fixture
)

MAX_EXECUTION_NAME = "n" * 36 + "-" + "x" * 43  # 80 characters: the longest Step Functions allows


@dataclass
class Recorded:
    """What one synthesized stack's runs sent to AWS."""

    calls: list[Call] = field(default_factory=list)
    jobs: list[tuple[str, dict]] = field(default_factory=list)  # ("Training"|"Processing", req)
    remote_jobs: list[dict] = field(default_factory=list)  # CreateTrainingJob of train --remote


def _run(synth, fns, monkeypatch, recorded: Recorded, scenario: Scenario, name: str):
    with recording() as calls:
        out = execute(synth, fns, scenario, monkeypatch, name=name)
    assert out.status == "SUCCEEDED", (name, out.error, out.cause)
    recorded.calls += [c for c in calls if c.principal]  # the test's own setup has none
    trains = [r for r in out.job_requests.values() if "TrainingJobName" in r]
    # the test's stand-in training reports no artifact; SageMaker puts it here (a tuned run's
    # BestTrial reads the real one from moto)
    adapter = (
        f"{trains[0]['OutputDataConfig']['S3OutputPath']}{trains[0]['TrainingJobName']}"
        "/output/model.tar.gz"
        if trains
        else None
    )
    for req in out.job_requests.values():
        for i in req.get("ProcessingInputs", []):
            if i["S3Input"]["S3Uri"] is None and i["InputName"] == "adapter":
                i["S3Input"]["S3Uri"] = adapter
        if req.get("Environment", {}).get("CODETUNE_ADAPTER_URI", "") is None:
            req["Environment"]["CODETUNE_ADAPTER_URI"] = adapter
        recorded.jobs.append((_kind(req), req))
    return out


def _kind(request: dict) -> str:
    """The job kind of a Create*Job request: Training, HyperParameterTuning or Processing."""
    for kind in ("Training", "HyperParameterTuning"):
        if f"{kind}JobName" in request:
            return kind
    return "Processing"


def _long_prepare_config(repo_root) -> dict:
    from codetune.config import read_yaml

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    config = dict(flat(read_yaml(repo_root / "training_image" / "prepare.yaml")))
    config.pop("languages", None)
    return config


@pytest.fixture(scope="module")
def module_monkeypatch():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def recorded(synth, handlers, module_monkeypatch, repo_root) -> Recorded:  # noqa: F811
    """The dev stage's runs: deploy path with a maximal name, sharded prepare with the shipped
    prepare config as overrides, an S3 base model with spot, and a failure notification."""
    rec = Recorded()
    artifact = _function_env(synth)["validate_request"]["ARTIFACT_BUCKET"]
    deploy = _input(synth)
    _run(synth, handlers, module_monkeypatch, rec,
         Scenario(deploy, _report(0.30), smoke_answers=GOOD_SMOKE), MAX_EXECUTION_NAME)  # fmt: skip
    sharded = _input(synth)
    sharded["registration"] = {"autoApprove": False}
    sharded["prepare"] = {"instanceCount": 10, "config": _long_prepare_config(repo_root)}
    _run(synth, handlers, module_monkeypatch, rec, Scenario(sharded, _report(0.30)), "r")
    model = f"s3://{artifact}/base-models/qwen-coder/"
    s3_model = _input(synth)
    s3_model.update(baseModel=model)
    s3_model["training"].update(instanceType="ml.p3.2xlarge", spot=True)
    s3_model["evaluation"] = {"instanceType": "ml.m5.xlarge"}
    s3_model["registration"] = {"autoApprove": False}
    _run(synth, handlers, module_monkeypatch, rec,
         Scenario(s3_model, _report(0.30), objects={model + "config.json": b"{}"}), "s3-model")  # fmt: skip
    tuned = _input(synth)  # spot trials of a Random search over numeric and categorical ranges
    tuned["training"].update(instanceType="ml.p3.2xlarge", spot=True)
    tuned["registration"] = {"autoApprove": False}
    tuned["tuning"] = {
        "strategy": "Random", "maxJobs": 3, "maxParallelJobs": 2, "earlyStopping": True,
        "ranges": {
            "lora.rank": {"type": "categorical", "values": [8, 16, 32]},
            "learning_rate": {"type": "continuous", "min": 1e-5, "max": 1e-3, "scaling": "Logarithmic"},
            "max_steps": {"type": "integer", "min": 50, "max": 200},
        },
    }  # fmt: skip
    _run(synth, handlers, module_monkeypatch, rec, Scenario(tuned, _report(0.30)), MAX_EXECUTION_NAME[:60])  # fmt: skip
    with recording() as calls:  # a failure: NotifyFailure publishes to the topic
        out = execute(synth, handlers, Scenario(_input(synth), _report(0.10)), module_monkeypatch, name="gate")  # fmt: skip
    assert out.status == "FAILED" and out.notifications
    rec.calls += [c for c in calls if c.principal]
    rec.calls += _deploy_lifecycle(synth, module_monkeypatch)
    rec.calls += _components_lifecycle(synth, module_monkeypatch)
    rec.calls += _train_remote(synth, module_monkeypatch, rec)
    return rec


@pytest.fixture(scope="module")
def recorded_vpc(synth_vpc, handlers, module_monkeypatch) -> Recorded:  # noqa: F811
    """The VPC stage: spot training, jobs and endpoint in the subnets."""
    rec = Recorded()
    run_input = _input(synth_vpc)
    run_input["training"]["spot"] = True
    _run(synth_vpc, handlers, module_monkeypatch, rec,
         Scenario(run_input, _report(0.30), smoke_answers=GOOD_SMOKE), "vpc-run")  # fmt: skip
    return rec


def _deploy_lifecycle(synth, monkeypatch) -> list[Call]:
    """RegisterAdapter then DeployEndpoint as the Lambdas run them, in one account: register
    (and re-register: the package is found, not made again), create → InService →
    autoscaling, an update to another run's config, and a Failed endpoint deleted and
    created anew by a run whose base model is in S3 (the endpoint role reads it)."""
    import boto3
    from moto import mock_aws
    from moto.sagemaker.models import sagemaker_backends

    from codetune.workflow import validate_run_input
    from codetune.workflow.aws import reset_clients
    from codetune.workflow.deploy import deploy_endpoint
    from codetune.workflow.events import GateResult
    from codetune.workflow.registry import register_adapter

    env = _function_env(synth)
    dep_env, val_env, reg_env = env["deploy_endpoint"], env["validate_request"], env["register_adapter"]  # fmt: skip
    artifact = val_env["ARTIFACT_BUCKET"]
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    reset_clients()

    def request(name: str, **changes):
        run_input = {**_input(synth), **changes}
        run_input["deployment"]["mode"] = "single-model"
        return validate_run_input(
            run_input,
            execution_name=name,
            artifact_bucket=artifact,
            allowed_buckets=[val_env["ALLOWED_BUCKETS"]],
            model_package_group=val_env["MODEL_PACKAGE_GROUP"],
            stage=val_env["STAGE"],
            endpoint_name=val_env["ENDPOINT_NAME"],
        )

    first, second = request("run-a"), request("run-b")
    third = request("run-c", baseModel=f"s3://{artifact}/base-models/qwen-coder/")
    with mock_aws(), recording() as calls:
        sm = boto3.client("sagemaker", region_name=REGION)
        aas = boto3.client("application-autoscaling", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        ecr = boto3.client("ecr", region_name=REGION)
        sm.create_model_package_group(ModelPackageGroupName=val_env["MODEL_PACKAGE_GROUP"])
        s3.create_bucket(Bucket=artifact, CreateBucketConfiguration={"LocationConstraint": REGION})
        repo, tag = reg_env["INFERENCE_IMAGE_URI"].split("/", 1)[1].split(":")
        ecr.create_repository(repositoryName=repo)
        manifest = {"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64},
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}  # fmt: skip
        ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)
        packages = {}
        for req in (first, first, second, third):
            bucket, key = req.paths.dataset.removeprefix("s3://").split("/", 1)
            s3.put_object(Bucket=bucket, Key=key + "manifest.json", Body=b"{}")
            with as_principal("register_adapter"):
                out = register_adapter(
                    req,
                    gate=GateResult(passed=True, reasons=[], report_uri=req.paths.report),
                    model_data_url=req.paths.model_data,
                    inference_image_uri=reg_env["INFERENCE_IMAGE_URI"],
                    image_git_revision=reg_env["IMAGE_GIT_REVISION"],
                    sagemaker=sm, s3=s3, ecr=ecr,
                )  # fmt: skip
            assert out["created"] == (req.run_id not in packages), out  # a re-run finds it
            packages[req.run_id] = out["modelPackageArn"]

        def update(params, **_):  # moto lacks UpdateEndpoint: apply it to moto's endpoint
            body = json.loads(params["body"])
            ep = sagemaker_backends[ACCOUNT][REGION].endpoints[body["EndpointName"]]
            ep.endpoint_config_name, ep.endpoint_status = body["EndpointConfigName"], "InService"
            return SimpleNamespace(status_code=200, headers={}), {"EndpointArn": ep.arn}

        sm.meta.events.register("before-call.sagemaker.UpdateEndpoint", update)

        def deploy(req, previous):
            with as_principal("deploy_endpoint"):
                return deploy_endpoint(
                    req,
                    previous=previous,
                    model_package_arn=packages[req.run_id],
                    role_arn=dep_env["SAGEMAKER_ROLE_ARN"],
                    kms_key_id=dep_env["KMS_KEY_ID"],
                    rollback_alarms=dep_env["ROLLBACK_ALARMS"].split(","),
                    sagemaker=sm,
                    autoscaling=aas,
                )

        start = {"action": "start"}
        out = deploy(first, deploy(first, start))
        assert out["autoscaling"] == "registered", out
        out = deploy(second, start)
        assert out["action"] == "updated", out
        ep = sagemaker_backends[ACCOUNT][REGION].endpoints[val_env["ENDPOINT_NAME"]]
        ep.endpoint_status = "Failed"
        out = deploy(third, start)
        assert out["action"] == "deleting", out
        out = deploy(third, out)
        assert out["action"] == "created", out
    reset_clients()
    return [c for c in calls if c.principal]


def _components_lifecycle(synth, monkeypatch) -> list[Call]:
    """DeployEndpoint with inference components as the deploy Lambda runs it: the first run
    (endpoint, base, adapter, autoscaling with scale-to-zero), a second run's adapter, a
    third run replacing the second's adapter, a Failed adapter component replaced; then the
    smoke test through the components."""
    import boto3
    from awscheck.components import InferenceComponents
    from moto import mock_aws

    from codetune.workflow import validate_run_input
    from codetune.workflow.aws import reset_clients
    from codetune.workflow.deploy import deploy_endpoint
    from codetune.workflow.registry import serving_environment
    from codetune.workflow.smoke import smoke_test

    env = _function_env(synth)
    dep_env, val_env = env["deploy_endpoint"], env["validate_request"]
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    reset_clients()

    def request(name: str, **deployment):
        run_input = _input(synth)
        run_input["deployment"].update(deployment)
        return validate_run_input(
            run_input,
            execution_name=name,
            artifact_bucket=val_env["ARTIFACT_BUCKET"],
            allowed_buckets=[val_env["ALLOWED_BUCKETS"]],
            model_package_group=val_env["MODEL_PACKAGE_GROUP"],
            stage=val_env["STAGE"],
            endpoint_name=val_env["ENDPOINT_NAME"],
        )

    double = InferenceComponents(region=REGION)
    with mock_aws(), double.installed(), recording() as calls, as_principal("deploy_endpoint"):
        sm = boto3.client("sagemaker", region_name=REGION)
        clients = dict(
            sagemaker=sm,
            autoscaling=boto3.client("application-autoscaling", region_name=REGION),
            cloudwatch=boto3.client("cloudwatch", region_name=REGION),
        )
        with as_principal(""):
            sm.create_model_package_group(ModelPackageGroupName=val_env["MODEL_PACKAGE_GROUP"])

        def deploy(req) -> dict:
            with as_principal(""):
                package = sm.create_model_package(
                    ModelPackageGroupName=val_env["MODEL_PACKAGE_GROUP"],
                    InferenceSpecification={
                        "Containers": [{
                            "Image": env["register_adapter"]["INFERENCE_IMAGE_URI"].split(":")[0] + "@sha256:" + "b" * 64,
                            "ModelDataUrl": req.paths.model_data,
                            "Environment": serving_environment(req),
                        }],
                        "SupportedContentTypes": ["application/json"],
                        "SupportedResponseMIMETypes": ["application/json"],
                    },
                    ModelApprovalStatus="Approved",
                )["ModelPackageArn"]  # fmt: skip
            out = {"action": "start", "status": "NotStarted"}
            for _ in range(10):
                out = deploy_endpoint(
                    req,
                    model_package_arn=package,
                    role_arn=dep_env["SAGEMAKER_ROLE_ARN"],
                    kms_key_id=dep_env["KMS_KEY_ID"],
                    rollback_alarms=[],
                    previous=out,
                    **clients,
                )
                if out["status"] == "InService":
                    return out
            raise AssertionError(out)

        first = request("ic-a", baseScaleToZero=True)
        assert deploy(first)["autoscaling"] == "registered"
        deploy(request("ic-b", adapterName="svc"))
        third = request("ic-c", adapterName="svc")
        deploy(third)
        double.fail(third.deployment.adapter_component)
        deploy(request("ic-d", adapterName="svc"))  # deleted, then created anew
        ops = [c.operation for c in calls]
        assert {"UpdateInferenceComponent", "DeleteInferenceComponent", "PutMetricAlarm"} <= set(
            ops
        )
        with as_principal(""):
            _queue_endpoint_answers([_chat("base"), _chat("svc"), [{"generated_text": "x"}]])
        with as_principal("smoke_test"):
            smoke_test(first, boto3.client("sagemaker-runtime", region_name=REGION))
    reset_clients()
    return [c for c in calls if c.principal]


def _train_remote(synth, monkeypatch, rec: Recorded) -> list[Call]:
    """`codetune train --remote` against the stack's outputs (rendered); its CreateTrainingJob
    is a job like the workflow's (the user's own permissions are not in the template)."""
    import boto3
    from moto import mock_aws
    from render import resolve

    from codetune.cli import build_parser
    from codetune.train import remote

    outputs = {k: resolve(synth.template, v["Value"]) for k, v in synth.template["Outputs"].items()}
    artifact = outputs["ArtifactBucketName"]
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv(remote.STACK_ENV, "CodetuneDevStack")
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # ModelTrainer's check: moto has no IAM
    with mock_aws(), recording() as calls, as_principal("user"):
        with as_principal(""):
            s3 = boto3.client("s3", region_name=REGION)
            for bucket in (artifact, outputs["InputBucketName"]):
                s3.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
                )
            s3.put_object(Bucket=artifact, Key="datasets/svc/train.jsonl", Body=b"{}\n")
            boto3.client("cloudformation", region_name=REGION).create_stack(
                StackName="CodetuneDevStack",
                TemplateBody=json.dumps({
                    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in outputs.items()},
                }),
            )  # fmt: skip
        args = build_parser().parse_args([
            "train", "--remote", "--data", f"s3://{artifact}/datasets/svc/",
            "--out", f"s3://{artifact}/runs/try-1/output/", "--spot",
            "--checkpoints", f"s3://{artifact}/checkpoints/try-1/",
            "--instance-type", "ml.g5.xlarge", "--no-wait",
        ])  # fmt: skip
        assert remote.run_remote(args, out=open("/dev/null", "w")) == 0
    (create,) = [c for c in calls if c.operation == "CreateTrainingJob"]
    rec.remote_jobs.append(create.params)
    return [c for c in calls if c.principal]


# -- the checks --------------------------------------------------------------------------------


def _needs(synth, rec: Recorded) -> list[iam.Need]:
    policies = iam.Policies.of(synth.template)
    env = {"endpoint": _function_env(synth)["validate_request"]["ENDPOINT_NAME"]}
    out: list[iam.Need] = []
    # a model is made from its run's package (both carry the run id)
    packages = {
        c.params["CustomerMetadataProperties"]["runId"]: c.params
        for c in rec.calls
        if c.operation == "CreateModelPackage"
    }
    updates = [c.params for c in rec.calls if c.operation == "UpdateEndpoint"]
    components = [
        c.params
        for c in rec.calls
        if c.operation in ("CreateInferenceComponent", "UpdateInferenceComponent")
        and "Specification" in c.params
    ]
    for c in rec.calls:
        if c.principal == "user":
            continue  # the user's own IAM is not the stack's; their job is checked below
        role = policies.role_of_function(c.principal)
        why = f"{c.principal}: {c.service}.{c.operation}"
        out += iam.needs_of_call(policies, role, c.service, c.operation, c.params, why)
        if c.service == "application-autoscaling":
            out += iam.autoscaling_needs(role, c.params, c.operation)
        if c.operation == "CreateModel":
            container = c.params["PrimaryContainer"]
            if "ModelPackageName" in container:  # a single-model endpoint: its run's package
                (run_id,) = [t["Value"] for t in c.params["Tags"] if t["Key"] == "codetune:runId"]
                container = packages[run_id]["InferenceSpecification"]["Containers"][0]
            # (else a component's base model: its own image and environment, no model data)
            out += iam.endpoint_needs(policies, c.params, container, updates[0] if updates else None, env)  # fmt: skip
        if c.operation == "CreateEndpointConfig" and "ExecutionRoleArn" in c.params:
            out += iam.component_needs(policies, c.params, components)
    for kind, req in rec.jobs:
        if kind == "HyperParameterTuning":
            out += iam.tuning_needs(policies, req)
        else:
            out += iam.job_needs(policies, kind, req)
    for req in rec.remote_jobs:
        out += iam.job_needs(policies, "Training", req, state_machine=False)
    out += iam.lambda_invoke_needs(policies, rendered_definition(synth.template))
    return out


def test_recorded_calls_cover_every_step(recorded):
    # guards: the recording saw each Lambda's calls and every kind of job (else the IAM check
    # below would pass vacuously)
    principals = {c.principal for c in recorded.calls}
    assert principals >= {
        "validate_request", "quality_gate", "register_adapter", "deploy_endpoint",
        "smoke_test", "notify_failure", "user",
    }  # fmt: skip
    ops = {c.operation for c in recorded.calls}
    assert {"CreateEndpoint", "UpdateEndpoint", "DeleteEndpoint", "RegisterScalableTarget",
            "PutScalingPolicy", "DeregisterScalableTarget", "CreateModelPackage",
            "InvokeEndpoint", "Publish",
            "CreateInferenceComponent", "DescribeInferenceComponent", "UpdateInferenceComponent",
            "DeleteInferenceComponent", "PutMetricAlarm"} <= ops  # fmt: skip
    # the smoke test addressed components, and autoscaling a component's copies
    assert any(
        "InferenceComponentName" in c.params
        for c in recorded.calls
        if c.operation == "InvokeEndpoint"
    )
    assert any(
        str(c.params.get("ResourceId", "")).startswith("inference-component/")
        for c in recorded.calls
    )
    assert "HyperParameterTuning" in {kind for kind, _ in recorded.jobs}
    names = {r.get("TrainingJobName") or r.get("ProcessingJobName") for _, r in recorded.jobs}
    assert any(n and n.endswith("-merge-r0") for n in names)
    assert any(n and "-eval-" in n for n in names)


GLUE_SERVICES = (
    "s3", "sagemaker", "sagemaker-runtime", "application-autoscaling", "ecr", "sns", "cloudwatch",
)  # fmt: skip


def _operations_in_glue_code(repo_root) -> set[tuple[str, str]]:
    """(service, operation) of every boto3 client method the workflow code and the Lambdas
    name (``.create_endpoint(``, ``get_paginator("list_objects_v2")``)."""
    import botocore.session
    from botocore import xform_name

    files = [*(repo_root / "src" / "codetune" / "workflow").glob("*.py"),
             *(repo_root / "lambdas").glob("*/handler.py")]  # fmt: skip
    source = "\n".join(f.read_text() for f in files)
    session = botocore.session.get_session()
    out = set()
    for service in GLUE_SERVICES:
        for op in session.get_service_model(service).operation_names:
            method = xform_name(op)
            if re.search(rf"\.{method}\b|get_paginator\(\"{method}\"\)", source):
                out.add((service, op))
    return out


def test_every_operation_of_the_glue_code_was_recorded(recorded, repo_root):
    # guards the IAM check's coverage: each AWS operation the workflow code can call (found in
    # its source) was made in a recorded run, so its grant was evaluated; an operation added
    # to codetune.workflow without a recorded scenario fails here
    in_code = _operations_in_glue_code(repo_root)
    assert ("sagemaker", "DeleteEndpoint") in in_code and len(in_code) > 15, in_code
    seen = {(c.service, c.operation) for c in recorded.calls if c.principal != "user"}
    # a method name several services share (sns and sagemaker DeleteEndpoint) counts once
    unrecorded = [(s, op) for s, op in in_code - seen if not any(o == op for _, o in seen)]
    assert sorted(unrecorded) == []


def test_endpoint_role_reads_an_s3_base_model(synth, recorded):
    # guards: a model whose base model is under base-models/ is served by an endpoint role
    # that may read it (ValidateRequest accepts S3 base models only there)
    needs = [n for n in _needs(synth, recorded) if n.principal.startswith("SageMakerRolesEndpointRole")]  # fmt: skip
    assert any(n.action == "s3:GetObject" and "/base-models/qwen-coder/" in n.resource for n in needs)  # fmt: skip


def test_every_call_is_allowed_by_the_policy_of_its_principal(synth, recorded):
    # guards: no AccessDenied where the stack runs: each recorded call and each call a service
    # makes for it (the table in awscheck.iam) is allowed for the role that makes it
    needs = _needs(synth, recorded)
    assert len(needs) > 200
    assert iam.missing(iam.Policies.of(synth.template), needs) == []


def test_vpc_stage_calls_are_allowed(synth_vpc, recorded_vpc):
    # guards: with subnets the jobs and the endpoint create ENIs; spot syncs checkpoints
    needs = _needs(synth_vpc, recorded_vpc)
    assert any(n.action == "ec2:CreateNetworkInterface" for n in needs)
    # the model runs in the stage's subnets like the jobs
    (model,) = [c.params for c in recorded_vpc.calls if c.operation == "CreateModel"]
    assert model["VpcConfig"] == {"Subnets": ["subnet-0a1b2c3d"], "SecurityGroupIds": ["sg-0a1b2c3d"]}  # fmt: skip
    assert any(n.action == "ec2:CreateNetworkInterface" and n.principal.startswith("SageMakerRolesEndpointRole") for n in needs)  # fmt: skip
    assert iam.missing(iam.Policies.of(synth_vpc.template), needs) == []


@pytest.mark.parametrize(
    ("role_prefix", "action"),
    [
        ("FunctionsDeployEndpointRole", "sagemaker:DeleteEndpoint"),
        ("FunctionsDeployEndpointRole", "sagemaker:CreateInferenceComponent"),
        ("FunctionsDeployEndpointRole", "sagemaker:UpdateInferenceComponentRuntimeConfig"),
        ("FunctionsSmokeTestRole", "sagemaker:InvokeEndpoint"),
        ("FunctionsDeployEndpointRole", "sagemaker:UpdateEndpointWeightsAndCapacities"),
        ("FunctionsDeployEndpointRole", "cloudwatch:PutMetricAlarm"),
        ("FunctionsDeployEndpointRole", "application-autoscaling:DeregisterScalableTarget"),
        ("FunctionsRegisterAdapterRole", "sagemaker:DescribeModelPackage"),
        ("SageMakerRolesJobRole", "kms:CreateGrant"),
        ("SageMakerRolesJobRole", "logs:DescribeLogStreams"),
        ("SageMakerRolesEvaluationRole", "logs:DescribeLogStreams"),
        ("SageMakerRolesEndpointRole", "logs:DescribeLogStreams"),
        ("SageMakerRolesEndpointRole", "cloudwatch:DescribeAlarms"),
        ("WorkflowStateMachineRole", "sagemaker:ListTags"),
        ("WorkflowStateMachineRole", "sagemaker:CreateHyperParameterTuningJob"),
    ],
)
def test_a_removed_grant_is_named(synth, recorded, role_prefix, action):
    # guards the check itself: without one grant in the template it fails naming the
    # principal, the action and the resource
    template = copy.deepcopy(synth.template)
    removed = 0
    for res in template["Resources"].values():
        if res["Type"] != "AWS::IAM::Policy":
            continue
        if not res["Properties"]["Roles"][0]["Ref"].startswith(role_prefix):
            continue
        for st in res["Properties"]["PolicyDocument"]["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            if action in actions:
                st["Action"] = [a for a in actions if a != action] or ["sts:GetCallerIdentity"]
                removed += 1
    assert removed
    lines = iam.missing(iam.Policies.of(template), _needs(synth, recorded))
    assert lines and all(line.startswith(role_prefix) for line in lines), lines
    # the resource: an ARN, or * for the actions without resource-level permissions
    assert all(re.search(rf" lacks {action} on (arn:aws:\S+|\*) ", line) for line in lines), lines


def test_every_request_is_within_the_api_limits(recorded, recorded_vpc):
    # guards: every recorded request and every rendered job request (maximal names, spot,
    # VPC, S3 base model, sharded prepare with the shipped config) is what botocore's model
    # and SageMaker's documented rules accept, including what the client does not check
    problems = []
    for rec in (recorded, recorded_vpc):
        for c in rec.calls:
            problems += [
                f"{c.principal}: {p}" for p in limits.problems(c.service, c.operation, c.params)
            ]
        for kind, req in rec.jobs:
            problems += limits.problems("sagemaker", f"Create{kind}Job", req)
        assert all(
            c.principal != "user"
            or c.operation != "CreateTrainingJob"
            or c.params in rec.remote_jobs
            for c in rec.calls
        )
    assert problems == []
    # the maximal execution name gave a 40-character run id, and its job names passed
    (rid,) = {
        c.params["ModelPackageGroupName"] and c.params["CustomerMetadataProperties"]["runId"]
        for c in recorded.calls
        if c.operation == "CreateModelPackage"
        and c.params["CustomerMetadataProperties"]["executionName"] == MAX_EXECUTION_NAME
    }
    assert len(rid) == 40
    assert any(
        rid in (r.get("TrainingJobName") or r.get("ProcessingJobName")) for _, r in recorded.jobs
    )


def test_limit_check_catches_what_botocore_lets_through():
    # guards the check itself: a 300-character environment value and a 40-character client
    # token pass botocore's client validation but not this one
    import botocore.session
    from botocore.stub import Stubber

    sm = botocore.session.get_session().create_client("sagemaker", region_name=REGION)
    request = {
        "ModelPackageGroupName": "g",
        "ClientToken": "t" * 40,
        "ModelApprovalStatus": "Approved",
    }
    with Stubber(sm) as stub:
        stub.add_response("create_model_package", {"ModelPackageArn": "arn:x"}, request)
        sm.create_model_package(**request)  # the client accepts it
    assert limits.problems("sagemaker", "CreateModelPackage", request) == [
        "CreateModelPackage.ClientToken: 40 characters, at most 36"
    ]
    env = {"CODETUNE_PREPARE_CONFIG": "x" * 300}
    found = limits.problems("sagemaker", "CreateProcessingJob", {"Environment": env})
    assert (
        "CreateProcessingJob.Environment.CODETUNE_PREPARE_CONFIG: 300 characters, at most 256"
        in found
    )
