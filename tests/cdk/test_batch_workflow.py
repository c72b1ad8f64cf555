"""The batch inference state machine: rendered from the synthesized template, executed in
moto's Step Functions interpreter with the real ValidateBatch and NotifyFailure handlers
(test_execution's world: SageMaker `.sync`/service states replaced by Pass states that record
the request they would send), its CreateModel / CreateTransformJob requests validated against
botocore's input shapes (awscheck.limits) and replayed against moto's SageMaker, and every
permission those requests need checked against the synthesized policies (awscheck.iam).
"""

from __future__ import annotations

import json

import pytest
from awscheck import iam, limits
from render import ACCOUNT, BATCH, REGION, rendered_definition
from test_execution import (
    Scenario,
    _function_env,
    execute,
    handlers,  # noqa: F401 - fixture
)


def _report() -> dict:  # no gate in this machine; Scenario wants one
    return {}


def _batch_input(synth, **extra) -> dict:
    env = _function_env(synth)["validate_batch"]
    doc = {
        "modelPackageArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/"
        f"{env['MODEL_PACKAGE_GROUP']}/3",
        "input": f"s3://{env['ARTIFACT_BUCKET']}/batch/nightly/",
    }
    return {**doc, **extra}


def _run(synth, handlers, monkeypatch, run_input, name="nightly-1", **kw):  # noqa: F811
    scenario = Scenario(run_input=run_input, report=_report(), **kw)
    return execute(synth, handlers, scenario, monkeypatch, name=name, construct=BATCH)


@pytest.fixture(scope="module")
def module_monkeypatch():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def gpu_run(synth, handlers, module_monkeypatch):  # noqa: F811
    """A g5 (NVMe instance storage) batch with a job adapter."""
    return _run(synth, handlers, module_monkeypatch, _batch_input(synth, adapter="my-run"))


@pytest.fixture(scope="module")
def cpu_run(synth, handlers, module_monkeypatch):  # noqa: F811
    """A CPU batch (EBS volume: the volume key applies), the container's concurrency."""
    return _run(
        synth, handlers, module_monkeypatch, _batch_input(synth, instanceType="ml.m5.xlarge")
    )


def test_success_path_validates_creates_the_model_and_runs_the_transform(gpu_run):
    # guards the path: validate → model → resources → transform → summary
    assert gpu_run.status == "SUCCEEDED", (gpu_run.error, gpu_run.cause)
    for state in ("ValidateBatch", "CreateBatchModel", "RunBatchTransform", "BatchDone"):
        assert state in gpu_run.states
    assert gpu_run.lambda_calls == ["validate_batch"]
    assert gpu_run.output == {
        "batchId": "nightly-1",
        "jobName": "dev-nightly-1-batch-r0",
        "output": "s3://artifacts/batch/nightly-1/output/",
    }


def test_transform_request_follows_the_line_contract(synth, gpu_run):
    # guards Batch Transform's contract with the inference server: one JSON body per line,
    # answers assembled line for line, the job's adapter as the server's default model
    req = gpu_run.job_requests["RunBatchTransform"]
    env = _function_env(synth)["validate_batch"]
    assert req["TransformJobName"] == "dev-nightly-1-batch-r0"
    assert req["ModelName"] == "dev-nightly-1-bmodel"
    assert req["BatchStrategy"] == "SingleRecord"
    assert req["TransformInput"]["SplitType"] == "Line"
    assert req["TransformInput"]["ContentType"] == "application/json"
    assert req["TransformOutput"]["AssembleWith"] == "Line"
    assert req["TransformOutput"]["S3OutputPath"] == (
        f"s3://{env['ARTIFACT_BUCKET']}/batch/nightly-1/output/"
    )
    assert req["Environment"] == {
        "CODETUNE_DEFAULT_MODEL": "my-run",
        "CODETUNE_INSTANCE_TYPE": "ml.g5.xlarge",
    }
    assert req["MaxPayloadInMB"] == 1  # the server's max_body_bytes (1 MiB)


def test_output_is_encrypted_and_nvme_volumes_get_no_key(gpu_run, cpu_run):
    # guards encryption: output always with the stack key; the volume key where SageMaker
    # accepts one (refused on instance storage: g5)
    for run in (gpu_run, cpu_run):
        req = run.job_requests["RunBatchTransform"]
        assert req["TransformOutput"]["KmsKeyId"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    assert "VolumeKmsKeyId" not in gpu_run.job_requests["RunBatchTransform"]["TransformResources"]
    cpu = cpu_run.job_requests["RunBatchTransform"]
    assert cpu["TransformResources"]["VolumeKmsKeyId"] == cpu["TransformOutput"]["KmsKeyId"]
    assert cpu["MaxConcurrentTransforms"] == 0  # ask the container (/execution-parameters)
    assert cpu["Environment"] == {"CODETUNE_INSTANCE_TYPE": "ml.m5.xlarge"}


def test_requests_validate_against_botocore_shapes(gpu_run, cpu_run):
    # guards: SageMaker would accept both requests (lengths, patterns, enums, ranges)
    for run in (gpu_run, cpu_run):
        assert (
            limits.problems("sagemaker", "CreateModel", run.job_requests["CreateBatchModel"]) == []
        )
        assert (
            limits.problems(
                "sagemaker", "CreateTransformJob", run.job_requests["RunBatchTransform"]
            )
            == []
        )


def test_transform_request_is_accepted_by_moto_sagemaker(gpu_run, monkeypatch):
    # guards: boto3's own validation and moto's SageMaker take the request as sent
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    req = gpu_run.job_requests["RunBatchTransform"]
    model = gpu_run.job_requests["CreateBatchModel"]
    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        sm.create_model(
            ModelName=model["ModelName"],
            ExecutionRoleArn=model["ExecutionRoleArn"],
            PrimaryContainer={"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/x:1"},
        )
        sm.create_transform_job(**req)
        desc = sm.describe_transform_job(TransformJobName=req["TransformJobName"])
    assert desc["TransformOutput"]["AssembleWith"] == "Line"
    assert desc["ModelName"] == model["ModelName"]


def test_invalid_input_fails_before_any_sagemaker_state(synth, handlers, monkeypatch):  # noqa: F811
    # guards fail-fast: an input the batch role could not read stops at ValidateBatch,
    # with every violation, and is published to the failure topic
    bad = _batch_input(synth, input="s3://elsewhere/requests.jsonl", adapter="no/slash")
    out = _run(synth, handlers, monkeypatch, bad, name="bad-1")
    assert out.status == "FAILED"
    assert out.error == "InvalidRunInput"
    assert "$.input" in out.cause and "$.adapter" in out.cause
    assert "CreateBatchModel" not in out.states
    assert out.lambda_calls == ["validate_batch", "notify_failure"]
    assert len(out.notifications) == 1


def test_a_failed_transform_job_is_reported(synth, handlers, monkeypatch):  # noqa: F811
    # guards the Catch of the transform state: StepFailed naming it, notification sent
    out = _run(
        synth,
        handlers,
        monkeypatch,
        _batch_input(synth),
        name="fails-1",
        job_failures={"RunBatchTransform": ("States.TaskFailed", "ClientError: see the logs")},
    )
    assert out.status == "FAILED"
    assert out.error == "RunBatchTransformFailed"
    assert "ClientError" in out.cause
    assert len(out.notifications) == 1


def _package(synth) -> dict:
    """The registered package's container, as RegisterAdapter creates it (base model in S3)."""
    env = _function_env(synth)
    artifact = env["validate_batch"]["ARTIFACT_BUCKET"]
    return {
        "InferenceSpecification": {
            "Containers": [
                {
                    "Image": env["register_adapter"]["INFERENCE_IMAGE_URI"],
                    "ModelDataUrl": f"s3://{artifact}/runs/r1/output/dev-r1-train-r0/output/"
                    "model.tar.gz",
                    "Environment": {"CODETUNE_BASE_MODEL": f"s3://{artifact}/base-models/q/"},
                }
            ]
        }
    }


def _needs(synth, runs) -> list[iam.Need]:
    policies = iam.Policies.of(synth.template)
    out = iam.lambda_invoke_needs(
        policies, rendered_definition(synth.template, BATCH), construct=BATCH
    )
    for run in runs:
        out += iam.transform_needs(
            policies,
            run.job_requests["CreateBatchModel"],
            run.job_requests["RunBatchTransform"],
            _package(synth),
            input_object="requests.jsonl",
        )
    return out


def test_every_permission_the_batch_needs_is_granted(synth, gpu_run, cpu_run):
    # guards least privilege from below: each call and service-side action is allowed
    needs = _needs(synth, [gpu_run, cpu_run])
    assert iam.missing(iam.Policies.of(synth.template), needs) == []


def test_a_removed_batch_output_grant_is_named(synth, gpu_run):
    # negative control of the check above: without the output grant the answers cannot land
    template = json.loads(json.dumps(synth.template))
    for res in template["Resources"].values():
        if res["Type"] == "AWS::IAM::Policy":
            for st in res["Properties"]["PolicyDocument"]["Statement"]:
                if "output/*" in json.dumps(st.get("Resource")):
                    st["Action"] = [a for a in iam._as_list(st["Action"]) if a != "s3:PutObject"]
    lines = iam.missing(iam.Policies.of(template), _needs(synth, [gpu_run]))
    assert any("s3:PutObject" in line and "/batch/nightly-1/output/" in line for line in lines)


def test_a_removed_state_machine_grant_is_named(synth, gpu_run):
    # negative control: the batch machine's own role is the one checked for CreateTransformJob
    template = json.loads(json.dumps(synth.template))
    for rid, res in template["Resources"].items():
        if res["Type"] == "AWS::IAM::Policy" and rid.startswith("BatchInference"):
            for st in res["Properties"]["PolicyDocument"]["Statement"]:
                actions = iam._as_list(st["Action"])
                st["Action"] = [a for a in actions if a != "sagemaker:CreateTransformJob"]
    lines = iam.missing(iam.Policies.of(template), _needs(synth, [gpu_run]))
    assert any("sagemaker:CreateTransformJob" in line for line in lines), lines


def test_batch_model_role_cannot_read_the_input_bucket_or_write_elsewhere(synth):
    # guards least privilege from above: the batch model reads batch/, runs/, base-models/
    # of the artifact bucket only and writes only batch/*/output/*
    policies = iam.Policies.of(synth.template)
    env = _function_env(synth)["validate_request"]
    role = [r for r in policies.statements if r.startswith("BatchModelRole")][0]
    artifact, inputs = env["ARTIFACT_BUCKET"], env["ALLOWED_BUCKETS"]
    denied = [
        iam.Need(role, "s3:GetObject", f"arn:aws:s3:::{inputs}/codebases/x.py"),
        iam.Need(role, "s3:GetObject", f"arn:aws:s3:::{artifact}/datasets/k/train.jsonl"),
        iam.Need(role, "s3:PutObject", f"arn:aws:s3:::{artifact}/runs/r1/output/model.tar.gz"),
        iam.Need(role, "s3:PutObject", f"arn:aws:s3:::{artifact}/batch/nightly/requests.jsonl"),
        iam.Need(role, "s3:DeleteObject", f"arn:aws:s3:::{artifact}/batch/x/output/a.out"),
    ]
    assert [n for n in denied if policies.allows(n)] == []


def test_asl_validator_accepts_the_batch_definition(synth, tmp_path, repo_root):
    # guards: the rendered batch definition is valid ASL (the same check as the training one)
    import subprocess

    validator = repo_root / ".cache/node/node_modules/.bin/asl-validator"
    if not validator.exists():
        pytest.skip("asl-validator missing (make node)")
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(rendered_definition(synth.template, BATCH)))
    proc = subprocess.run(
        [str(validator), "--json-path", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
