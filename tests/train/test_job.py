"""The one CreateTrainingJob builder (codetune.train.job): what every training job gets."""

from __future__ import annotations

import json

import pytest

from codetune.metrics import metric_definitions
from codetune.train.hyperparameters import to_hyperparameters
from codetune.train.job import JobStack, TrainingJobSpec, default_max_wait, training_job
from codetune.workflow.events import ValidateRequestEnv
from codetune.workflow.validate import validate_run_input

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/codetune-training:abc"
ROLE = "arn:aws:iam::123456789012:role/codetune-jobs"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/k"
STACK = JobStack(image_uri=IMAGE, role_arn=ROLE, key_arn=KEY)
SPEC = TrainingJobSpec(
    job_name="dev-run-1-train-r0",
    run_id="run-1",
    config="cpu-smollm2",
    overrides={"lora.rank": 32},
    dataset="s3://a/datasets/d/",
    output="s3://a/runs/run-1/output/",
    instance_type="ml.p3.2xlarge",
)


def test_the_request_carries_image_role_metrics_hyperparameters_and_encryption():
    # guards the contract every client sends: image, role, the trainer's metric regexes, the
    # one hyperparameter encoding, both channels on the dataset, KMS on output and volume
    job = training_job(SPEC, STACK)
    assert job["RoleArn"] == ROLE and job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    assert job["HyperParameters"] == to_hyperparameters("cpu-smollm2", {"lora.rank": 32})
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["train", "validation"]
    assert job["OutputDataConfig"]["KmsKeyId"] == KEY
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == KEY  # p3: EBS volume
    assert job["EnableInterContainerTrafficEncryption"] is True
    assert job["EnableManagedSpotTraining"] is False
    assert "CheckpointConfig" not in job and "VpcConfig" not in job
    assert job["Environment"] == {"CODETUNE_RUN_ID": "run-1"}


def test_nvme_instances_get_no_volume_key_and_s3_weights_a_model_channel():
    # guards: SageMaker refuses VolumeKmsKeyId on g5 (NVMe); an S3 base model is a channel
    spec = TrainingJobSpec(
        **{**SPEC.__dict__, "instance_type": "ml.g5.xlarge", "model": "s3://a/m/"}
    )
    job = training_job(spec, STACK)
    assert "VolumeKmsKeyId" not in job["ResourceConfig"]
    assert job["OutputDataConfig"]["KmsKeyId"] == KEY
    assert job["InputDataConfig"][2]["ChannelName"] == "model"


def test_spot_needs_checkpoints_and_waits_twice_the_runtime():
    # guards managed spot: refused without checkpoints; MaxWait defaults to 2 x runtime,
    # within SageMaker's 28 days and never below the runtime
    spot = TrainingJobSpec(**{**SPEC.__dict__, "spot": True})
    with pytest.raises(ValueError, match="spot job needs checkpoints"):
        training_job(spot, STACK)
    spot = TrainingJobSpec(**{**spot.__dict__, "checkpoints": "s3://a/checkpoints/run-1/"})
    job = training_job(spot, STACK)
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"] == {
        "S3Uri": "s3://a/checkpoints/run-1/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 86400,
        "MaxWaitTimeInSeconds": 172800,
    }
    assert default_max_wait(2_000_000) == 2_419_200
    assert default_max_wait(3600, ceiling=1800) == 3600


def test_validate_request_builds_the_job_from_its_environment():
    # guards: with the stack's image/role/key/subnets in its environment ValidateRequest puts
    # the whole request at training.job, named as the first attempt, in the run's paths
    env = ValidateRequestEnv.from_environ(
        {
            "ARTIFACT_BUCKET": "art",
            "MODEL_PACKAGE_GROUP": "g",
            "TRAINING_IMAGE_URI": IMAGE,
            "TRAINING_ROLE_ARN": ROLE,
            "KMS_KEY_ID": KEY,
            "VPC_SUBNET_IDS": "subnet-1,subnet-2",
            "VPC_SECURITY_GROUP_IDS": "sg-1",
        }
    )
    doc = {
        "baseModel": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "data": {"dataset": "s3://art/datasets/d/"},
        "training": {"config": "cpu-smollm2", "instanceType": "ml.g5.xlarge", "spot": True},
    }
    req = validate_run_input(
        doc, execution_name="e1", artifact_bucket="art", job_stack=env.job_stack
    )
    job = req.training.job
    assert job["TrainingJobName"] == req.jobs.train + "-r0"
    assert job["CheckpointConfig"]["S3Uri"] == req.paths.checkpoints
    assert job["OutputDataConfig"]["S3OutputPath"] == req.paths.output
    assert job["HyperParameters"] == req.training.hyperparameters
    assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] == req.training.max_wait_seconds
    assert job["VpcConfig"] == {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert json.loads(json.dumps(req.to_dict()))["training"]["job"] == job
    # a local run (no stack) has none
    local = validate_run_input(doc, execution_name="e1", artifact_bucket="/tmp/x")
    assert local.training.job is None
