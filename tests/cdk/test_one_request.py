"""One training job request: ValidateRequest builds the CreateTrainingJob input
(codetune.train.job.training_job), the state machine as rendered sends it, and
`codetune train --remote` (through the SageMaker SDK's ModelTrainer) sends the same for the
same job."""

from __future__ import annotations

import json

from awscheck.record import recording
from render import REGION
from test_execution import (
    Scenario,
    _function_env,
    _input,
    _report,
    execute,
    fresh_aws_clients,  # noqa: F401 - autouse fixture: no cached client leaves this module
    handlers,  # noqa: F401 - fixture
)


def _remote_request(synth, monkeypatch, argv: list[str]) -> dict:
    """`codetune train --remote ARGV` against the rendered stack's outputs in moto: the
    CreateTrainingJob input it sent."""
    import boto3
    from moto import mock_aws
    from render import resolve

    from codetune.cli import build_parser
    from codetune.train import remote

    outputs = {k: resolve(synth.template, v["Value"]) for k, v in synth.template["Outputs"].items()}
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv(remote.STACK_ENV, "CodetuneDevStack")
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # moto simulates no IAM policies
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (outputs["ArtifactBucketName"], outputs["InputBucketName"]):
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="CodetuneDevStack",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in outputs.items()},
                }
            ),
        )
        with recording() as calls:
            args = build_parser().parse_args(["train", "--remote", *argv, "--no-wait"])
            assert remote.run_remote(args, out=open("/dev/null", "w")) == 0
    (create,) = [c for c in calls if c.operation == "CreateTrainingJob"]
    return create.params


def test_validate_request_state_machine_and_remote_send_the_same_job(
    synth,
    handlers,  # noqa: F811
    monkeypatch,
):
    # guards one request builder: for the same job (config + overrides, S3 base model, spot,
    # instance, paths) ValidateRequest's training.job, the CreateTrainingJob input the rendered
    # TrainAdapter sends, and what `train --remote` sends are the same; only the job's name
    # (and the run id the job is told) are each client's own
    artifact = _function_env(synth)["validate_request"]["ARTIFACT_BUCKET"]
    model = f"s3://{artifact}/base-models/qwen-coder/"
    run_input = _input(synth)
    run_input["baseModel"] = model
    run_input["training"].update(
        instanceType="ml.p3.2xlarge", spot=True, overrides={"lora.rank": 32, "max_steps": 80}
    )
    run_input["registration"] = {"autoApprove": False}
    scenario = Scenario(run_input, _report(0.30), objects={model + "config.json": b"{}"})
    out = execute(synth, handlers, scenario, monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    built = out.request["training"]["job"]
    assert out.job_requests["TrainAdapter"] == built

    # the same job from the command line; MaxWait spelled out: the workflow's default also
    # stays within the state machine's training task, which a one-off job does not have
    paths = out.request["paths"]
    sent = _remote_request(
        synth,
        monkeypatch,
        [
            "--data", paths["dataset"], "--out", paths["output"],
            "--config", run_input["training"]["config"],
            "--set", "lora.rank=32", "--set", "max_steps=80",
            "--base-model", model, "--instance-type", "ml.p3.2xlarge",
            "--spot", "--checkpoints", paths["checkpoints"],
            "--max-wait-seconds", str(out.request["training"]["maxWaitSeconds"]),
        ],
    )  # fmt: skip
    name = sent["TrainingJobName"]  # ModelTrainer's: <run id>-<timestamp>
    run_id = name.rsplit("-", 1)[0]
    assert run_id.startswith("codetune-remote-")
    assert sent == {**built, "TrainingJobName": name, "Environment": {"CODETUNE_RUN_ID": run_id}}
