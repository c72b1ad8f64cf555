"""``codetune train --remote`` against moto: the CreateTrainingJob request and the errors."""

from __future__ import annotations

import io
import json
import tarfile

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from codetune.cli import build_parser
from codetune.metrics import metric_definitions
from codetune.plan import PlanError
from codetune.train import remote
from codetune.train.hyperparameters import to_hyperparameters

REGION = "us-east-1"
ARTIFACTS = "codetune-artifacts-test"
INPUTS = "codetune-inputs-test"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/codetune-training:abc"
ROLE = "arn:aws:iam::123456789012:role/codetune-sagemaker"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DATA = f"s3://{ARTIFACTS}/datasets/svc/"
OUT = f"s3://{ARTIFACTS}/runs/try-1/output/"
CKPT = f"s3://{ARTIFACTS}/checkpoints/try-1/"


def _args(*extra: str):
    return build_parser().parse_args(
        ["train", "--remote", "--data", DATA, "--out", OUT, "--no-wait", *extra]
    )


@pytest.fixture
def aws(monkeypatch):
    """moto account with the stack's buckets and a stack exposing the outputs --remote reads."""
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        remote.STACK_ENV: "CodetuneTestStack",
        "SAGEMAKER_VALIDATE_ROLE": "false",  # ModelTrainer's role check: moto has no policies
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=ARTIFACTS)
        s3.create_bucket(Bucket=INPUTS)
        outputs = {
            remote.OUT_ARTIFACT_BUCKET: ARTIFACTS,
            remote.OUT_INPUT_BUCKET: INPUTS,
            remote.OUT_IMAGE: IMAGE,
            remote.OUT_ROLE: ROLE,
            remote.OUT_KEY: KEY,
        }
        template = {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()},
        }
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="CodetuneTestStack", TemplateBody=json.dumps(template)
        )
        yield boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def sent(monkeypatch):
    """The CreateTrainingJob requests exactly as serialised onto the wire (JSON bodies):
    moto does not keep every field (it answers MetricDefinitions with its own sample)."""
    bodies: list[dict] = []
    original = remote.session_or_error

    def capture(params, **_):
        bodies.append(json.loads(params["body"]))

    def session_or_error():
        session = original()
        session.events.register("before-call.sagemaker.CreateTrainingJob", capture)
        return session

    monkeypatch.setattr(remote, "session_or_error", session_or_error)
    return bodies


def _only_job(sm) -> dict:
    names = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    assert len(names) == 1, names
    return sm.describe_training_job(TrainingJobName=names[0])


def test_job_request_matches_the_workflow_contract(aws, sent, capsys):
    # Guards the request reaching the API: image, role, KMS, channels, instance, metrics.
    # No --image/--role: both come from the stack outputs (cdk/stack.py declares them).
    args = _args("--config", "gpu-10gb-stable-code-3b", "--instance-type", "ml.p3.2xlarge")
    assert remote.run_remote(args) == 0
    job = _only_job(aws)
    algo = job["AlgorithmSpecification"]
    assert algo["TrainingImage"] == IMAGE and job["RoleArn"] == ROLE
    assert sent[0]["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["train", "validation"]
    assert {c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]} == {DATA}
    assert job["OutputDataConfig"] == {
        "S3OutputPath": OUT,
        "KmsKeyId": KEY,
        "CompressionType": "GZIP",
    }
    assert job["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == KEY  # EBS volume: the stack key
    assert "VpcConfig" not in sent[0]  # this stack has no VPC outputs
    assert "CheckpointConfig" not in job or not job["CheckpointConfig"]
    out = capsys.readouterr().out
    assert "aws sagemaker describe-training-job --training-job-name codetune-remote-" in out


def test_local_storage_instances_get_no_volume_key(aws, sent):
    # Guards: g5 (NVMe instance storage) must not get VolumeKmsKeyId (SageMaker refuses it);
    # the output is still encrypted with the stack key.
    assert remote.run_remote(_args("--instance-type", "ml.g5.xlarge")) == 0
    assert sent[0]["OutputDataConfig"]["KmsKeyId"] == KEY
    assert "VolumeKmsKeyId" not in sent[0]["ResourceConfig"]


def test_vpc_outputs_reach_the_job(aws, sent, monkeypatch):
    # Guards: a stage whose jobs run in a VPC exposes subnets/security groups as outputs, and
    # --remote puts them into VpcConfig (the job would otherwise run outside the VPC).
    outputs = {
        remote.OUT_ARTIFACT_BUCKET: ARTIFACTS,
        remote.OUT_IMAGE: IMAGE,
        remote.OUT_ROLE: ROLE,
        remote.OUT_KEY: KEY,
        remote.OUT_SUBNETS: "subnet-1,subnet-2",
        remote.OUT_SECURITY_GROUPS: "sg-1",
    }
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="CodetuneVpcStack", TemplateBody=json.dumps(template)
    )
    monkeypatch.setenv(remote.STACK_ENV, "CodetuneVpcStack")
    assert remote.run_remote(_args("--instance-type", "ml.g5.xlarge")) == 0
    assert sent[0]["VpcConfig"] == {
        "Subnets": ["subnet-1", "subnet-2"],
        "SecurityGroupIds": ["sg-1"],
    }


def test_hyperparameters_and_metrics_are_byte_identical_to_the_workflow(aws, sent):
    # Guards "one source": the same config + --set overrides give exactly the bytes
    # ValidateRequest puts in the state machine input, and the CDK's metric definitions.
    from codetune.workflow.validate import validate_run_input

    args = _args(
        "--config", "cpu-smollm2", "--set", "max_steps=80", "--set", "lora.rank=32",
        "--instance-type", "ml.g5.xlarge", "--base-model", "HuggingFaceTB/SmolLM2-135M-Instruct",
    )  # fmt: skip
    remote.run_remote(args)
    wire = sent[0]["HyperParameters"]
    assert _only_job(aws)["HyperParameters"] == wire  # what moto stored = what was sent
    doc = {
        "baseModel": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "data": {"dataset": DATA},
        "training": {
            "config": "cpu-smollm2",
            "overrides": {"max_steps": 80, "lora.rank": 32},
            "instanceType": "ml.g5.xlarge",
        },
    }
    req = validate_run_input(doc, execution_name="e1", artifact_bucket=ARTIFACTS)
    assert json.dumps(wire, sort_keys=True) == json.dumps(
        req.training.hyperparameters, sort_keys=True
    )
    # both clients send the base model as the base_model override (the trainer reads it)
    assert wire == to_hyperparameters(
        "cpu-smollm2",
        {"max_steps": 80, "lora.rank": 32, "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    )
    # the state machine's MetricDefinitions come from the same function (cdk/stack.py)
    metrics = sent[0]["AlgorithmSpecification"]["MetricDefinitions"]
    assert json.dumps(metrics) == json.dumps(metric_definitions())


def test_spot_sets_checkpoints_and_max_wait(aws):
    # Guards managed spot: checkpoint S3 URI, spot flag, and MaxWait = 2 x MaxRuntime.
    args = _args("--spot", "--checkpoints", CKPT, "--instance-type", "ml.g5.xlarge")
    remote.run_remote(args)
    job = _only_job(aws)
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"] == {"S3Uri": CKPT, "LocalPath": "/opt/ml/checkpoints"}
    stop = job["StoppingCondition"]
    assert stop["MaxWaitTimeInSeconds"] == 2 * stop["MaxRuntimeInSeconds"]


def test_auto_instance_asks_the_planner_and_s3_model_adds_a_channel(aws):
    # Guards --instance-type auto (planner's cheapest) and the model channel for S3 weights.
    remote.run_remote(_args("--config", "gpu-10gb-stable-code-3b"))
    assert _only_job(aws)["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    opts = remote.options_from_args(
        _args(
            "--base-model", f"s3://{ARTIFACTS}/base-models/qwen/", "--instance-type", "ml.g5.xlarge"
        )
    )
    stack = remote.StackInfo("s", ARTIFACTS, INPUTS, IMAGE, ROLE, KEY)
    req = remote.build_request(opts, stack, "job-1", "ml.g5.xlarge")
    assert [c["ChannelName"] for c in req["InputDataConfig"]] == ["train", "validation", "model"]
    assert "base_model" not in json.loads(req["HyperParameters"]["codetune_overrides"])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--spot"], "--spot needs --checkpoints"),
        (["--config", "training_image/configs/cpu-smollm2.yaml"], "shipped in the training image"),
        (["--config", "nope"], "not in the image; known: "),
        (["--instance-count", "0"], "--instance-count must be >= 1"),
        (["--max-wait-seconds", "90000"], "--max-wait-seconds is only allowed with --spot"),
        (["--spot", "--checkpoints", CKPT, "--max-wait-seconds", "60"], "must be --max-runtime"),
    ],
)
def test_bad_flags_fail_before_anything_is_created(aws, extra, match):
    # Guards bad input: each mistake names its flag and no job is created.
    with pytest.raises(remote.RemoteError, match=match):
        remote.run_remote(_args(*extra))
    assert aws.list_training_jobs()["TrainingJobSummaries"] == []


def test_s3_paths_outside_the_stack_buckets_are_refused(aws):
    # Guards: data outside the stack's buckets, outputs outside the artifact bucket.
    bad_data = build_parser().parse_args(
        ["train", "--remote", "--data", "s3://someone-else/d/", "--out", OUT, "--no-wait"]
    )
    with pytest.raises(remote.RemoteError, match="outside the stack's buckets"):
        remote.run_remote(bad_data)
    bad_out = build_parser().parse_args(
        ["train", "--remote", "--data", DATA, "--out", f"s3://{INPUTS}/o/", "--no-wait"]
    )
    with pytest.raises(remote.RemoteError, match="must be in the artifact bucket"):
        remote.run_remote(bad_out)
    local = build_parser().parse_args(["train", "--remote", "--data", "/tmp/d", "--out", OUT])
    with pytest.raises(remote.RemoteError, match="--data must be an s3:// URI"):
        remote.run_remote(local)
    assert aws.list_training_jobs()["TrainingJobSummaries"] == []


def test_planner_refusal_stops_the_submission(aws):
    # Guards: an instance the planner says cannot fit is refused with numbers, no job created.
    args = _args("--base-model", "meta-llama/Llama-3.1-70B", "--instance-type", "ml.g5.xlarge")
    with pytest.raises(PlanError, match=r"needs \d+\.\d GB per GPU"):
        remote.run_remote(args)
    assert aws.list_training_jobs()["TrainingJobSummaries"] == []


def test_no_region_or_no_credentials(monkeypatch, tmp_path):
    # Guards: missing region / credentials are clear errors before any AWS call.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for k in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):  # fmt: skip
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(remote.RemoteError, match="no AWS region"):
        remote.run_remote(_args())
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(remote.RemoteError, match="no AWS credentials"):
        remote.run_remote(_args())


def test_job_is_created_through_model_trainer(aws, sent, monkeypatch):
    # Guards: --remote submits with the SageMaker Python SDK's ModelTrainer (not a boto3 call
    # of its own), which sends exactly the request codetune built, under ModelTrainer's name
    from sagemaker.train import ModelTrainer

    trainers = []
    train = ModelTrainer.train

    def spy(self, *a, **kw):
        trainers.append(self)
        return train(self, *a, **kw)

    monkeypatch.setattr(ModelTrainer, "train", spy)
    built = []
    monkeypatch.setattr(
        remote,
        "build_request",
        lambda *a, build=remote.build_request: built.append(build(*a)) or built[-1],
    )
    assert remote.run_remote(_args("--instance-type", "ml.g5.xlarge")) == 0
    (trainer,) = trainers
    name = trainer._latest_training_job.training_job_name
    assert _only_job(aws)["TrainingJobName"] == name
    assert name.startswith(built[0]["TrainingJobName"] + "-")  # <run id>-<timestamp>
    assert sent == [{**built[0], "TrainingJobName": name}]


def test_missing_sdk_is_named_before_anything_is_created(aws, monkeypatch):
    # Guards: without the `remote` extra the user learns what to install, and nothing is made
    real = remote.importlib.util.find_spec
    monkeypatch.setattr(
        remote.importlib.util,
        "find_spec",
        lambda n, *a: None if n == "sagemaker.train" else real(n, *a),
    )
    with pytest.raises(remote.RemoteError, match=r"pip install 'codetune\[remote\]'"):
        remote.run_remote(_args("--instance-type", "ml.g5.xlarge"))
    assert aws.list_training_jobs()["TrainingJobSummaries"] == []


def test_resource_limit_exceeded_names_the_quota_and_alternatives(aws, monkeypatch):
    # Guards AWS error advice: which quota to raise and which fitting instances to try, when
    # SageMaker refuses ModelTrainer's CreateTrainingJob.
    original = remote.session_or_error

    def refuse(**_):
        raise ClientError(
            {"Error": {"Code": "ResourceLimitExceeded", "Message": "limit is 0"}},
            "CreateTrainingJob",
        )

    def session_or_error():
        session = original()
        session.events.register("before-call.sagemaker.CreateTrainingJob", refuse)
        return session

    monkeypatch.setattr(remote, "session_or_error", session_or_error)
    args = _args("--config", "gpu-10gb-stable-code-3b", "--instance-type", "ml.g5.xlarge")
    with pytest.raises(remote.RemoteError) as e:
        remote.run_remote(args)
    msg = str(e.value)
    assert "'ml.g5.xlarge for training job usage'" in msg and "Service Quotas" in msg
    assert "ml.g4dn.xlarge" in msg  # the cheapest other instance that fits


def test_wait_reports_adapter_uri_and_training_summary(aws):
    # Guards --wait: ends with the adapter's S3 URI and the summary read from model.tar.gz.
    args = build_parser().parse_args(
        ["train", "--remote", "--data", DATA, "--out", OUT, "--instance-type", "ml.g5.xlarge"]
    )
    buf = io.StringIO()
    desc_orig = remote.follow

    def follow(sm, logs, job_name, out, poll_s=0):
        desc = desc_orig(sm, logs, job_name, out=out, poll_s=0)
        # moto completes jobs at once without artifacts: publish one where it says it is
        uri = desc["ModelArtifacts"]["S3ModelArtifacts"]
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w:gz") as tar:
            body = json.dumps({"steps": 3, "final_loss": 1.25}).encode()
            info = tarfile.TarInfo("training_summary.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        bucket, key = uri[5:].split("/", 1)
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=bucket, Key=key, Body=data.getvalue()
        )
        return desc

    remote.follow = follow
    try:
        assert remote.run_remote(args, out=buf) == 0
    finally:
        remote.follow = desc_orig
    text = buf.getvalue()
    assert "adapter: s3://" in text and '"final_loss": 1.25' in text


@pytest.mark.parametrize(
    "instance_type", ["ml.g5.xlarge", "ml.g6e.2xlarge", "ml.p4d.24xlarge", "ml.p3.2xlarge"]
)
def test_volume_key_decided_like_the_workflow(instance_type, monkeypatch):
    # Guards: --remote and the state machine decide VolumeKmsKeyId the same way: --remote sends
    # it exactly when ValidateRequest marks training.volumeKmsKey (both use
    # codetune.workflow.deploy.supports_kms_volume); the output key is sent either way.
    from codetune.workflow import validate_run_input

    monkeypatch.setattr("codetune.plan.check_instance", lambda *a: None)
    opts = remote.RemoteOptions(data=DATA, out=OUT, config="gpu-24gb-qwen-coder-1.5b")
    stack = remote.StackInfo("s", ARTIFACTS, image_uri=IMAGE, role_arn=ROLE, key_arn=KEY)
    req = remote.build_request(opts, stack, "j", instance_type)
    workflow = validate_run_input(
        {
            "baseModel": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
            "data": {"dataset": DATA},
            "training": {"config": "gpu-24gb-qwen-coder-1.5b", "instanceType": instance_type},
        },
        execution_name="try-1",
        artifact_bucket=ARTIFACTS,
    )
    sends_key = "VolumeKmsKeyId" in req["ResourceConfig"]
    assert sends_key == workflow.training.volume_kms_key
    assert sends_key == (instance_type.split(".")[1] in ("p3",))
    assert req["OutputDataConfig"]["KmsKeyId"] == KEY


def test_follow_prints_each_log_line_once(aws):
    # guards: following a job prints every log event once, however many polls see it (the
    # last page used to be printed again on every poll)
    import time as _time

    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=remote.LOG_GROUP)
    logs.create_log_stream(logGroupName=remote.LOG_GROUP, logStreamName="job-1/algo-1-1")
    clock = [int(_time.time() * 1000)]

    def put(*lines):
        events = []
        for m in lines:
            clock[0] += 1
            events.append({"timestamp": clock[0], "message": m})
        logs.put_log_events(
            logGroupName=remote.LOG_GROUP, logStreamName="job-1/algo-1-1", logEvents=events
        )

    put("step 1", "step 2")
    statuses = iter(["InProgress", "InProgress", "Completed"])

    class SM:
        def describe_training_job(self, TrainingJobName):
            status = next(statuses)
            if status == "Completed":
                put("step 3")
            return {"TrainingJobStatus": status, "SecondaryStatus": "Training"}

    buf = io.StringIO()
    remote.follow(SM(), logs, "job-1", out=buf, poll_s=0)
    lines = [x for x in buf.getvalue().splitlines() if not x.startswith("[")]
    assert lines == ["step 1", "step 2", "step 3"]
