"""The ``CreateTrainingJob`` input of one training job, built in one place.

ValidateRequest builds it for the workflow (``request.training.job``; the state machine's
TrainAdapter sends it as it is, with the attempt's job name) and ``codetune train --remote``
builds it for a one-off job (ModelTrainer submits the same request). What differs between
the two is only what :class:`TrainingJobSpec` says: paths, instance, spot, config.
"""

from __future__ import annotations

from dataclasses import dataclass

from codetune.metrics import metric_definitions
from codetune.train.hyperparameters import to_hyperparameters

MAX_SECONDS = 2419200  # SageMaker's 28-day ceiling for MaxRuntime / MaxWait
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # SageMaker syncs it with CheckpointConfig.S3Uri
RUN_ID_ENV = "CODETUNE_RUN_ID"


@dataclass(frozen=True)
class JobStack:
    """What the deployed stack gives every training job (cdk/stack.py: the Lambda's
    environment, and the outputs ``train --remote`` reads)."""

    image_uri: str
    role_arn: str
    key_arn: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingJobSpec:
    """One training job: what to train, on what, where the results go."""

    job_name: str
    run_id: str
    config: str  # a config shipped in the training image (training_image/configs/<name>.yaml)
    overrides: dict  # dotted keys (``{"lora.rank": 32}``), checked by the trainer's loader
    dataset: str  # s3:// prefix: the train and validation channels
    output: str  # s3:// prefix: SageMaker writes <output><job name>/output/model.tar.gz
    instance_type: str
    instance_count: int = 1
    volume_size_gb: int = 100
    max_runtime_seconds: int = 86400
    spot: bool = False
    max_wait_seconds: int | None = None  # with spot; default: default_max_wait()
    checkpoints: str | None = None  # s3:// prefix synced with /opt/ml/checkpoints
    model: str | None = None  # s3:// prefix of the base model's weights: the model channel


def default_max_wait(max_runtime_seconds: int, ceiling: int = MAX_SECONDS) -> int:
    """A spot job's MaxWaitTimeInSeconds: twice the runtime, within ``ceiling`` (SageMaker's
    28 days, or less), never below the runtime (SageMaker refuses that)."""
    return max(min(2 * max_runtime_seconds, ceiling, MAX_SECONDS), max_runtime_seconds)


def channel(name: str, uri: str) -> dict:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def training_job(spec: TrainingJobSpec, stack: JobStack) -> dict:
    """The whole ``CreateTrainingJob`` input of ``spec`` on ``stack``."""
    from codetune.workflow.deploy import supports_kms_volume  # the endpoints' rule too

    if spec.spot and not spec.checkpoints:
        raise ValueError("a spot job needs checkpoints: it resumes only from those synced to S3")
    channels = [channel("train", spec.dataset), channel("validation", spec.dataset)]
    if spec.model:
        channels.append(channel("model", spec.model))
    resources: dict = {
        "InstanceType": spec.instance_type,
        "InstanceCount": spec.instance_count,
        "VolumeSizeInGB": spec.volume_size_gb,
    }
    output: dict = {"S3OutputPath": spec.output, "CompressionType": "GZIP"}
    if stack.key_arn:
        output["KmsKeyId"] = stack.key_arn
        # NVMe instance storage (g5, p4d...) is encrypted in hardware; SageMaker refuses a
        # VolumeKmsKeyId there
        if supports_kms_volume(spec.instance_type):
            resources["VolumeKmsKeyId"] = stack.key_arn
    stopping: dict = {"MaxRuntimeInSeconds": spec.max_runtime_seconds}
    if spec.spot:
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait_seconds or default_max_wait(
            spec.max_runtime_seconds
        )
    job: dict = {
        "TrainingJobName": spec.job_name,
        "RoleArn": stack.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": stack.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
        },
        "HyperParameters": to_hyperparameters(spec.config, spec.overrides),
        "InputDataConfig": channels,
        "OutputDataConfig": output,
        "ResourceConfig": resources,
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spec.spot,
        "EnableInterContainerTrafficEncryption": True,
        "Environment": {RUN_ID_ENV: spec.run_id},
    }
    if spec.checkpoints:
        job["CheckpointConfig"] = {"S3Uri": spec.checkpoints, "LocalPath": CHECKPOINT_DIR}
    if stack.subnet_ids:
        job["VpcConfig"] = {
            "Subnets": list(stack.subnet_ids),
            "SecurityGroupIds": list(stack.security_group_ids),
        }
    return job
