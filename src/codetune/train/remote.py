"""``codetune train --remote``: one SageMaker training job from the command line.

The job is the workflow's TrainAdapter job: its ``CreateTrainingJob`` input comes from the
builder ValidateRequest uses (:func:`codetune.train.job.training_job`) with the training
image, role, KMS key and network read from the deployed stack's outputs, and the SageMaker
Python SDK's ``ModelTrainer`` submits it (``pip install 'codetune[remote]'``).

    codetune train --remote --data s3://ARTIFACTS/datasets/my-service/ \\
        --out s3://ARTIFACTS/runs/try-1/output/ --config gpu-24gb-qwen-coder-1.5b \\
        --set max_steps=100 --instance-type auto
    codetune train --remote ... --spot --checkpoints s3://ARTIFACTS/checkpoints/try-1/ --no-wait

The stack is ``$CODETUNE_STACK`` (default ``CodetuneDevStack``); ``--image`` / ``--role``
replace its outputs. Credentials and region come from the usual boto3 chain
(``AWS_PROFILE``, ``AWS_REGION``...).

ModelTrainer checks the role (``iam:SimulatePrincipalPolicy``) before it creates the job;
``SAGEMAKER_VALIDATE_ROLE=false`` skips that. It names the job ``<run id>-<timestamp>``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import os
import re
import secrets
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from codetune.errors import CodetuneError, ConfigError
from codetune.train.config import shipped_configs
from codetune.train.job import MAX_SECONDS, JobStack, TrainingJobSpec, training_job

log = logging.getLogger(__name__)

DEFAULT_STACK = "CodetuneDevStack"
STACK_ENV = "CODETUNE_STACK"
DEFAULT_CONFIG = "cpu-smollm2"
# Stack outputs read here (the CDK app declares them in cdk/stack.py).
OUT_ARTIFACT_BUCKET = "ArtifactBucketName"
OUT_INPUT_BUCKET = "InputBucketName"
OUT_IMAGE = "TrainingImageUri"
OUT_ROLE = "SageMakerRoleArn"
OUT_KEY = "KmsKeyArn"
OUT_SUBNETS = "VpcSubnetIds"  # comma-separated; only when the stage runs jobs in a VPC
OUT_SECURITY_GROUPS = "VpcSecurityGroupIds"
# Same defaults as the run input schema (schemas/run-input.schema.json, training.*).
MAX_RUNTIME_SECONDS = 86400
VOLUME_SIZE_GB = 100
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = {"Completed", "Failed", "Stopped"}
_S3 = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")


class RemoteError(CodetuneError):
    """``train --remote`` cannot submit (bad input, missing stack output, AWS refusal)."""


@dataclass(frozen=True)
class StackInfo:
    """What the deployed stack tells ``--remote``."""

    name: str
    artifact_bucket: str
    input_bucket: str | None = None
    image_uri: str | None = None
    role_arn: str | None = None
    key_arn: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()

    @property
    def buckets(self) -> tuple[str, ...]:
        return tuple(b for b in (self.artifact_bucket, self.input_bucket) if b)


@dataclass
class RemoteOptions:
    """The validated command line of ``train --remote``."""

    data: str
    out: str
    config: str = DEFAULT_CONFIG
    overrides: dict = field(default_factory=dict)  # dotted keys, as the workflow sends them
    base_model: str | None = None
    instance_type: str = "auto"
    instance_count: int = 1
    spot: bool = False
    checkpoints: str | None = None
    role: str | None = None
    image: str | None = None
    wait: bool = True
    max_runtime_seconds: int = MAX_RUNTIME_SECONDS
    max_wait_seconds: int | None = None  # with spot; default twice the runtime
    volume_size_gb: int = VOLUME_SIZE_GB


# --------------------------------------------------------------------------- inputs


def flat_overrides(items: list[str] | None) -> dict:
    """``["lora.rank=32"]`` -> ``{"lora.rank": 32}``: the dotted form the workflow's run
    input carries, so both clients encode identical hyperparameters."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set lora.rank=32)")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from e
    return out


def options_from_args(args: argparse.Namespace) -> RemoteOptions:
    """Validate the parsed command line; raises RemoteError naming the flag to change."""
    for flag, value in (("--data", args.data), ("--out", args.out)):
        if not value or not str(value).startswith("s3://"):
            raise RemoteError(
                f"{flag} must be an s3:// URI with --remote (got {value!r}); upload a local "
                "dataset with `aws s3 sync DIR s3://ARTIFACTS/datasets/NAME/`"
            )
    config = args.config or DEFAULT_CONFIG
    if "/" in config or config.endswith((".yaml", ".yml")):
        raise RemoteError(
            f"--config {config!r}: with --remote give the name of a config shipped in the "
            f"training image ({', '.join(shipped_configs())}); put changes in --set"
        )
    known = shipped_configs()
    if known and config not in known:
        raise RemoteError(f"--config {config!r} is not in the image; known: {', '.join(known)}")
    if args.instance_count < 1:
        raise RemoteError(f"--instance-count must be >= 1, got {args.instance_count}")
    if args.spot and not args.checkpoints:
        raise RemoteError(
            "--spot needs --checkpoints s3://ARTIFACTS/checkpoints/NAME/: a spot job can be "
            "interrupted and resumes only from checkpoints synced to S3"
        )
    runtime = getattr(args, "max_runtime_seconds", MAX_RUNTIME_SECONDS)
    wait = getattr(args, "max_wait_seconds", None)
    if not 1 <= runtime <= MAX_SECONDS:
        raise RemoteError(f"--max-runtime-seconds must be 1..{MAX_SECONDS}, got {runtime}")
    if wait is not None and not args.spot:
        raise RemoteError("--max-wait-seconds is only allowed with --spot")
    if wait is not None and not runtime <= wait <= MAX_SECONDS:
        raise RemoteError(
            f"--max-wait-seconds must be --max-runtime-seconds ({runtime})..{MAX_SECONDS}, "
            f"got {wait}"
        )
    if args.checkpoints and not str(args.checkpoints).startswith("s3://"):
        raise RemoteError(f"--checkpoints must be an s3:// URI with --remote: {args.checkpoints}")
    overrides = flat_overrides(args.overrides)
    base = args.base_model
    if base and not base.startswith("s3://"):
        overrides["base_model"] = base  # an HF id reaches the trainer as a config override
    return RemoteOptions(
        data=_dir_uri(args.data),
        out=_dir_uri(args.out),
        config=config,
        overrides=overrides,
        base_model=base,
        instance_type=args.instance_type or "auto",
        instance_count=args.instance_count,
        spot=bool(args.spot),
        checkpoints=_dir_uri(args.checkpoints) if args.checkpoints else None,
        role=args.role,
        image=args.image,
        wait=bool(args.wait),
        max_runtime_seconds=runtime,
        max_wait_seconds=wait,
    )


def _dir_uri(uri: str) -> str:
    return uri.rstrip("/") + "/"


def _bucket(uri: str) -> str:
    m = _S3.match(uri)
    if not m:
        raise RemoteError(f"{uri!r} is not a valid s3:// URI")
    return m.group(1)


def check_paths(opts: RemoteOptions, stack: StackInfo) -> None:
    """Every S3 path must be in the stack's buckets (the role can reach nothing else);
    outputs and checkpoints in the artifact bucket."""
    reads = [("--data", opts.data)]
    if opts.base_model and opts.base_model.startswith("s3://"):
        reads.append(("--base-model", opts.base_model))
    for flag, uri in reads:
        if _bucket(uri) not in stack.buckets:
            raise RemoteError(
                f"{flag} {uri} is outside the stack's buckets ({', '.join(stack.buckets)}): "
                "the training role cannot read it. Copy it into the input bucket first"
            )
    writes = [("--out", opts.out)] + (
        [("--checkpoints", opts.checkpoints)] * bool(opts.checkpoints)
    )
    for flag, uri in writes:
        if _bucket(uri) != stack.artifact_bucket:
            raise RemoteError(
                f"{flag} {uri} must be in the artifact bucket s3://{stack.artifact_bucket}/ "
                "(the only bucket the training role may write)"
            )


# --------------------------------------------------------------------------- AWS


def session_or_error():
    """A boto3 session with a region and credentials, or RemoteError saying how to get them."""
    import boto3

    # botocore reads AWS_DEFAULT_REGION and profiles; AWS_REGION is what the other SDKs use
    session = boto3.Session(region_name=os.environ.get("AWS_REGION") or None)
    if not session.region_name:
        raise RemoteError(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile with a region)"
        )
    if session.get_credentials() is None:
        raise RemoteError(
            "no AWS credentials: run `aws configure` / `aws sso login`, or set AWS_PROFILE"
        )
    return session


def read_stack(cfn, stack_name: str) -> StackInfo:
    """The stack's outputs; RemoteError when the stack is not deployed."""
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as e:
        raise RemoteError(
            f"stack {stack_name} not found ({e.response['Error'].get('Message', e)}): deploy it "
            f"with `cdk deploy`, or set {STACK_ENV} to the deployed stack's name"
        ) from e
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if OUT_ARTIFACT_BUCKET not in outputs:
        raise RemoteError(f"stack {stack_name} has no {OUT_ARTIFACT_BUCKET} output")
    return StackInfo(
        name=stack_name,
        artifact_bucket=outputs[OUT_ARTIFACT_BUCKET],
        input_bucket=outputs.get(OUT_INPUT_BUCKET),
        image_uri=outputs.get(OUT_IMAGE),
        role_arn=outputs.get(OUT_ROLE),
        key_arn=outputs.get(OUT_KEY),
        subnet_ids=_csv(outputs.get(OUT_SUBNETS)),
        security_group_ids=_csv(outputs.get(OUT_SECURITY_GROUPS)),
    )


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def resolve_instance(opts: RemoteOptions) -> str:
    """``auto`` -> the planner's cheapest fit; an explicit type is checked by the planner."""
    from codetune.plan import check_instance, recommend_instance

    base = opts.base_model
    if base and base.startswith("s3://"):
        if opts.instance_type == "auto":
            raise RemoteError(
                "--instance-type auto cannot plan a base model stored in S3 (its size is "
                "unknown here): give --instance-type, e.g. ml.g5.xlarge"
            )
        return opts.instance_type
    if opts.instance_type == "auto":
        return recommend_instance(base, opts.config, opts.overrides)
    check_instance(opts.instance_type, base, opts.config, opts.overrides)
    return opts.instance_type


def new_run_id() -> str:
    """``codetune-remote-xxxx``: the job's run id and the base of its name (ModelTrainer adds
    ``-YYYYmmddHHMMSS``; the random part keeps two submissions in one second apart)."""
    return f"codetune-remote-{secrets.token_hex(2)}"


def job_spec(opts: RemoteOptions, job_name: str, instance_type: str) -> TrainingJobSpec:
    """The job ``opts`` describe, as the workflow's ValidateRequest would describe it."""
    model = opts.base_model if opts.base_model and opts.base_model.startswith("s3://") else None
    return TrainingJobSpec(
        job_name=job_name,
        run_id=job_name,
        config=opts.config,
        overrides=opts.overrides,
        dataset=opts.data,
        output=opts.out,
        instance_type=instance_type,
        instance_count=opts.instance_count,
        volume_size_gb=opts.volume_size_gb,
        max_runtime_seconds=opts.max_runtime_seconds,
        spot=opts.spot,
        max_wait_seconds=opts.max_wait_seconds,
        checkpoints=opts.checkpoints,
        model=_dir_uri(model) if model else None,
    )


def job_stack(opts: RemoteOptions, stack: StackInfo) -> JobStack:
    """The stack's image, role, key and network (``--image`` / ``--role`` replace theirs)."""
    image = opts.image or stack.image_uri
    role = opts.role or stack.role_arn
    if not image:
        raise RemoteError(f"no training image: pass --image, or deploy a stack with {OUT_IMAGE}")
    if not role:
        raise RemoteError(f"no execution role: pass --role, or deploy a stack with {OUT_ROLE}")
    return JobStack(
        image_uri=image,
        role_arn=role,
        key_arn=stack.key_arn,
        subnet_ids=stack.subnet_ids,
        security_group_ids=stack.security_group_ids,
    )


def build_request(opts: RemoteOptions, stack: StackInfo, job_name: str, instance_type: str) -> dict:
    """The ``CreateTrainingJob`` input: :func:`codetune.train.job.training_job`, as for the
    workflow's TrainAdapter."""
    return training_job(job_spec(opts, job_name, instance_type), job_stack(opts, stack))


def explain_client_error(e, request: dict) -> RemoteError:
    """AWS's refusal -> what to do next (quota to raise, instance to try)."""
    err = e.response.get("Error", {})
    code, msg = err.get("Code", ""), err.get("Message", str(e))
    itype = request["ResourceConfig"]["InstanceType"]
    spot = request.get("EnableManagedSpotTraining", False)
    if code == "ResourceLimitExceeded":
        usage = "spot training job usage" if spot else "training job usage"
        return RemoteError(
            f"AWS quota: {msg}. Raise it in Service Quotas -> Amazon SageMaker -> "
            f"'{itype} for {usage}' (region {_region_of()}), "
            f"or try another instance type that fits: {', '.join(_alternatives(request)) or '-'}"
        )
    if code in {"CapacityError", "InsufficientCapacity", "InsufficientInstanceCapacity"}:
        return RemoteError(
            f"no {itype} capacity right now ({msg}). Retry later"
            + ("" if spot else ", use --spot with --checkpoints")
            + f", or try: {', '.join(_alternatives(request)) or '-'}"
        )
    return RemoteError(f"CreateTrainingJob failed ({code}): {msg}")


def _region_of() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "current"


def _alternatives(request: dict, n: int = 3) -> list[str]:
    """Other instance types the planner says fit, cheapest first."""
    try:
        from codetune.plan import make_plan, setup_for

        hp = request["HyperParameters"]
        overrides = json.loads(hp["codetune_overrides"])
        arch, setup = setup_for(overrides.get("base_model"), hp["codetune_config"], overrides)
        plan = make_plan(arch, setup)
    except CodetuneError:
        return []
    current = request["ResourceConfig"]["InstanceType"]
    ok = [name for name, fits in plan.fits.items() if fits and name != current]
    ok.sort(key=lambda n: plan.table.instances[n].price_usd_per_hour)
    return ok[:n]


def model_trainer(request: dict, boto_session):
    """The SageMaker Python SDK's ``ModelTrainer`` set up to send ``request`` (the
    :func:`codetune.train.job.training_job` input), and the channels to train on.

    ModelTrainer names the job ``<TrainingJobName>-<timestamp>``.
    """
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.shapes import (
        Channel,
        DataSource,
        MetricDefinition,
        S3DataSource,
        StoppingCondition,
    )
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        Networking,
        OutputDataConfig,
    )
    from sagemaker.train import ModelTrainer

    algo, res = request["AlgorithmSpecification"], request["ResourceConfig"]
    out, stop = request["OutputDataConfig"], request["StoppingCondition"]
    vpc, ckpt = request.get("VpcConfig") or {}, request.get("CheckpointConfig")
    trainer = ModelTrainer(
        sagemaker_session=Session(boto_session=boto_session),
        role=request["RoleArn"],
        base_job_name=request["TrainingJobName"],
        training_image=algo["TrainingImage"],
        training_input_mode=algo["TrainingInputMode"],
        hyperparameters=request["HyperParameters"],
        environment=request["Environment"],
        compute=Compute(
            instance_type=res["InstanceType"],
            instance_count=res["InstanceCount"],
            volume_size_in_gb=res["VolumeSizeInGB"],
            volume_kms_key_id=res.get("VolumeKmsKeyId"),
            enable_managed_spot_training=request["EnableManagedSpotTraining"],
        ),
        networking=Networking(
            subnets=vpc.get("Subnets"),
            security_group_ids=vpc.get("SecurityGroupIds"),
            enable_inter_container_traffic_encryption=request[
                "EnableInterContainerTrafficEncryption"
            ],
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=stop["MaxRuntimeInSeconds"],
            max_wait_time_in_seconds=stop.get("MaxWaitTimeInSeconds"),
        ),
        output_data_config=OutputDataConfig(
            s3_output_path=out["S3OutputPath"],
            kms_key_id=out.get("KmsKeyId"),
            compression_type=out["CompressionType"],
        ),
        checkpoint_config=(
            CheckpointConfig(s3_uri=ckpt["S3Uri"], local_path=ckpt["LocalPath"]) if ckpt else None
        ),
    ).with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in algo["MetricDefinitions"]]
    )
    channels = [
        Channel(
            channel_name=c["ChannelName"],
            data_source=DataSource(
                s3_data_source=S3DataSource(
                    s3_data_type=c["DataSource"]["S3DataSource"]["S3DataType"],
                    s3_uri=c["DataSource"]["S3DataSource"]["S3Uri"],
                    s3_data_distribution_type=c["DataSource"]["S3DataSource"][
                        "S3DataDistributionType"
                    ],
                )
            ),
        )
        for c in request["InputDataConfig"]
    ]
    return trainer, channels


def submit(session, request: dict) -> tuple[str, str]:
    """Create the training job through ModelTrainer; returns its (name, ARN). AWS refusals
    become RemoteError with what to do next."""
    from botocore.exceptions import ClientError

    trainer, channels = model_trainer(request, session)
    try:
        trainer.train(input_data_config=channels, wait=False, logs=False)
    except ClientError as e:
        raise explain_client_error(e, request) from e
    job = trainer._latest_training_job  # how ModelTrainer hands out the job it created
    return job.training_job_name, job.training_job_arn


def follow(sm, logs, job_name: str, out=None, poll_s: float = 15.0) -> dict:
    """Stream the job's CloudWatch logs and status changes until it ends; returns the final
    DescribeTrainingJob."""
    from botocore.exceptions import ClientError

    out = out or sys.stdout
    last_status, start, seen = None, 0, set()
    while True:
        desc = sm.describe_training_job(TrainingJobName=job_name)
        status = (desc["TrainingJobStatus"], desc.get("SecondaryStatus"))
        if status != last_status:
            print(f"[{job_name}] {status[0]} / {status[1]}", file=out, flush=True)
            last_status = status
        try:
            start = _print_new_events(logs, job_name, start, seen, out)
        except ClientError:
            pass  # the log group appears only once the first instance starts
        if status[0] in TERMINAL:
            return desc
        time.sleep(poll_s)


def _print_new_events(logs, job_name: str, start: int, seen: set, out) -> int:
    """Print the job's log events not printed yet; returns where the next poll starts.

    Each poll reads every page from the newest timestamp printed (inclusive: events sharing
    it may arrive later) and skips the event ids already printed, so no line repeats.
    """
    kw = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": job_name, "startTime": start}
    while True:
        page = logs.filter_log_events(**kw)
        for ev in page.get("events", []):
            if ev["eventId"] in seen:
                continue
            seen.add(ev["eventId"])
            print(ev["message"], file=out, flush=True)
            start = max(start, ev["timestamp"])
        if not page.get("nextToken"):
            return start
        kw["nextToken"] = page["nextToken"]


def training_summary(s3, model_uri: str) -> dict | None:
    """``training_summary.json`` from the job's model.tar.gz (None when unreadable)."""
    from botocore.exceptions import ClientError

    bucket = _bucket(model_uri)
    key = model_uri.split("/", 3)[3]
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            for member in tar.getmembers():
                if Path(member.name).name == "training_summary.json":
                    fh = tar.extractfile(member)
                    return json.loads(fh.read()) if fh else None
    except (ClientError, tarfile.TarError, ValueError, KeyError):
        return None
    return None


def run_remote(args: argparse.Namespace, out=None) -> int:
    """Validate, plan, submit, and (``--wait``) follow one training job. Nothing is created
    before every check passed."""
    out = out or sys.stdout
    opts = options_from_args(args)
    if importlib.util.find_spec("sagemaker.train") is None:
        raise RemoteError(
            "--remote submits through the SageMaker Python SDK's ModelTrainer, which is not "
            "installed: pip install 'codetune[remote]'"
        )
    session = session_or_error()
    stack_name = os.environ.get(STACK_ENV, DEFAULT_STACK)
    stack = read_stack(session.client("cloudformation"), stack_name)
    check_paths(opts, stack)
    instance_type = resolve_instance(opts)
    request = build_request(opts, stack, new_run_id(), instance_type)
    job_name, arn = submit(session, request)
    print(f"submitted {job_name} ({instance_type} x {opts.instance_count}): {arn}", file=out)
    if not opts.wait:
        print(
            f"follow it with:\n  aws sagemaker describe-training-job --training-job-name "
            f"{job_name}\n  aws logs tail {LOG_GROUP} --log-stream-name-prefix {job_name} "
            "--follow",
            file=out,
        )
        return 0
    desc = follow(session.client("sagemaker"), session.client("logs"), job_name, out=out)
    if desc["TrainingJobStatus"] != "Completed":
        print(
            f"{job_name} {desc['TrainingJobStatus']}: {desc.get('FailureReason', 'no reason')}",
            file=out,
        )
        return 1
    model_uri = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
    print(f"adapter: {model_uri}", file=out)
    summary = training_summary(session.client("s3"), model_uri) if model_uri else None
    print(
        "training summary: "
        + (
            json.dumps(summary, indent=2, sort_keys=True)
            if summary
            else "not found in model.tar.gz"
        ),
        file=out,
    )
    return 0
