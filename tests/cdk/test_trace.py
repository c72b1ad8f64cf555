"""The jobs of the moto-executed AWS path run on what SageMaker would hand them.

``training.overrides.lora.rank`` followed from a run input to the adapter: the real
ValidateRequest handler -> the CreateTrainingJob input the rendered TrainAdapter state sends,
here to moto's SageMaker (an aws-sdk task, so SageMaker records the job) -> read back with
DescribeTrainingJob -> the container laid out from the recorded job (its channels downloaded
from moto's S3) -> the training image's entrypoint -> ``adapter_config.json``'s ``r``. And the
Processing jobs' arguments and environment as the state machine renders them are the ones
the local runner gives its jobs (codetune.jobenv). (The local path: tests/local/test_local_trace.py.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from render import REGION
from test_execution import (
    Scenario,
    _function_env,
    _input,
    _report,
    aws_world,
    execute,
    execute_in,
    fresh_aws_clients,  # noqa: F401 - autouse fixture: no cached client leaves this module
    handlers,  # noqa: F401 - fixture
)

from codetune import jobenv
from codetune.containers import run_training_job
from codetune.workflow.request import RunRequest

RANK = 4  # not the config's (cpu-smollm2: 16), so only the override can put it there


def _train_fixtures(repo_root: Path):
    sys.path.insert(0, str(repo_root / "tests" / "train"))
    try:
        import train_fixtures
    finally:
        sys.path.pop(0)
    return train_fixtures


def _s3_dirs(s3, root: Path):
    """A channel's (or the checkpoints') S3 prefix -> a local directory holding its objects,
    as SageMaker downloads a File-mode channel."""

    def local_dir(uri: str) -> Path:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        dest = root / bucket / prefix
        dest.mkdir(parents=True, exist_ok=True)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in (o for page in pages for o in page.get("Contents", [])):
            target = dest / obj["Key"][len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        return dest

    return local_dir


@pytest.mark.slow
def test_lora_rank_reaches_the_adapter_on_the_aws_path(
    synth,
    handlers,  # noqa: F811
    monkeypatch,
    tmp_path,
    repo_root,
):
    # guards the AWS decoding path end to end: the hyperparameters SageMaker records for the
    # job TrainAdapter sends, decoded by the image's entrypoint, give the adapter the rank of
    # the run input
    import boto3

    monkeypatch.setenv("CODETUNE_TORCH_THREADS", "1")  # shared CPU: see train_fixtures

    fixtures = _train_fixtures(repo_root)
    artifact = _function_env(synth)["validate_request"]["ARTIFACT_BUCKET"]
    dataset = f"s3://{artifact}/datasets/tiny/"
    data = fixtures.write_dataset(tmp_path / "dataset", n_train=4, n_val=2)
    run_input = _input(synth)
    run_input.update(baseModel="embedded", data={"dataset": dataset})
    run_input["training"] = {
        "config": "cpu-smollm2",
        "instanceType": "ml.g5.xlarge",
        "overrides": {**fixtures.TINY_RUN_OVERRIDES, "lora.rank": RANK, "lora.alpha": 2 * RANK},
    }
    run_input["registration"] = {"autoApprove": False}
    objects = {dataset + f.name: f.read_bytes() for f in data.iterdir()}
    scenario = Scenario(run_input, _report(0.30), objects=objects, record_training_job=True)
    with aws_world(synth, handlers, scenario, monkeypatch) as world:
        out = execute_in(world, synth, scenario, "trace-1")
        assert out.status == "SUCCEEDED", (out.error, out.cause)
        sent = out.job_requests["TrainAdapter"]
        described = boto3.client("sagemaker", region_name=REGION).describe_training_job(
            TrainingJobName=sent["TrainingJobName"]
        )
        built = out.request["training"]["job"]
        assert described["HyperParameters"] == sent["HyperParameters"] == built["HyperParameters"]
        assert json.loads(described["HyperParameters"]["codetune_overrides"])["lora.rank"] == RANK
        job = {k: described[k] for k in ("HyperParameters", "InputDataConfig", "CheckpointConfig")}
        job["Environment"] = sent["Environment"]  # moto 5.2.5 keeps no job Environment
        s3 = boto3.client("s3", region_name=REGION)
        root = tmp_path / "opt_ml"
        result = run_training_job(job, root, _s3_dirs(s3, tmp_path / "s3"))
    assert result.ok, result.log[-3000:]
    assert (
        json.loads((root / "input/config/hyperparameters.json").read_text())
        == built["HyperParameters"]
    )
    assert json.loads((root / "model" / "adapter_config.json").read_text())["r"] == RANK


def test_processing_jobs_get_what_the_local_runner_gives_them(synth, handlers, monkeypatch):  # noqa: F811
    # guards "same inputs": the entrypoint, arguments, inputs and environment the rendered
    # state machine gives PrepareDataset and EvaluateAdapter are those codetune.local gives
    # the same jobs, apart from the stack's own sandbox minimum
    from codetune.local import evaluate_job, prepare_job

    run_input = _input(synth)
    run_input["registration"] = {"autoApprove": False}
    out = execute(synth, handlers, Scenario(run_input, _report(0.30)), monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    request = RunRequest.from_dict(out.request)
    here = Path("/here")
    for state, local in (
        ("PrepareDataset", prepare_job(request, here, here)),
        ("EvaluateAdapter", evaluate_job(request, here, here, here)),
    ):
        sent = out.job_requests[state]
        app = sent["AppSpecification"]
        assert app["ContainerEntrypoint"] == [local.entrypoint]
        assert app.get("ContainerArguments", []) == list(local.arguments)
        assert [i["InputName"] for i in sent["ProcessingInputs"]] == list(local.inputs)
        outputs = sent["ProcessingOutputConfig"]["Outputs"]
        assert [o["OutputName"] for o in outputs] == list(local.outputs)
        env = dict(local.environment)
        if jobenv.ADAPTER_URI in env:  # the adapter's own URI: $.training.modelDataUrl
            env[jobenv.ADAPTER_URI] = sent["Environment"][jobenv.ADAPTER_URI]
            env[jobenv.SANDBOX_REQUIRE] = "seccomp"  # the stack's minimum (EVAL_SANDBOX_REQUIRE)
        assert sent["Environment"] == env, state
