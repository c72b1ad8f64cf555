"""DeployEndpoint: create the endpoint, or update it blue/green with alarm-based rollback.

One call does at most one mutating step and returns the endpoint's status; the state machine
calls it again after a Wait until ``status`` is ``InService`` (SageMaker takes minutes, a
Lambda must not wait that long). Re-running with the same input when the endpoint already
serves this run's config changes nothing.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from codetune.workflow.aws import call, classify, is_not_found
from codetune.workflow.errors import DeploymentFailed, RetryableError

VARIANT = "AllTraffic"  # blue/green needs the same variant name in old and new config
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
POLICY_NAME = "codetune-invocations-per-instance"
SCALE_IN_COOLDOWN = 300
SCALE_OUT_COOLDOWN = 60

# Families with NVMe instance storage: SageMaker refuses a KmsKeyId in the endpoint config
# for them (their local volumes are encrypted by the instance's hardware module).
LOCAL_STORAGE_FAMILIES = frozenset(
    {
        "g4dn",
        "g5",
        "g6",
        "g6e",
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "m5d",
        "c5d",
        "r5d",
        "inf2",
        "trn1",
    }
)


# GPU hosting runs on this AMI (NVIDIA driver 580, CUDA 13) for the inference image's CUDA
# build; SageMaker's default GPU AMI has an older driver. Only GPU families take it.
GPU_INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"
GPU_FAMILY_PREFIXES = ("g", "p")


def inference_ami(instance_type: str) -> str | None:
    """The InferenceAmiVersion for ``instance_type`` (None for CPU/Inferentia families)."""
    parts = instance_type.split(".")
    family = parts[1] if len(parts) >= 3 else ""
    return GPU_INFERENCE_AMI if family.startswith(GPU_FAMILY_PREFIXES) else None


def supports_kms_volume(instance_type: str) -> bool:
    """False for instance types whose storage is local NVMe (KmsKeyId is rejected there)."""
    parts = instance_type.split(".")
    return len(parts) < 2 or parts[1] not in LOCAL_STORAGE_FAMILIES


def _describe(fn, op: str, **kw) -> dict | None:
    try:
        return fn(**kw)
    except ClientError as e:
        if is_not_found(e):
            return None
        raise classify(e, op) from e


def endpoint_config_spec(request, kms_key_id: str | None) -> dict:
    """The CreateEndpointConfig arguments for this run."""
    dep = request.deployment
    spec = {
        "EndpointConfigName": request.jobs.endpoint_config,
        "ProductionVariants": [
            {
                "VariantName": VARIANT,
                "ModelName": request.jobs.model,
                "InstanceType": dep.instance_type,
                "InitialInstanceCount": dep.instance_count,
                "InitialVariantWeight": 1.0,
                "ContainerStartupHealthCheckTimeoutInSeconds": dep.startup_health_check_timeout_seconds,
                "ModelDataDownloadTimeoutInSeconds": dep.model_data_download_timeout_seconds,
            }
        ],
        "Tags": [{"Key": "codetune:runId", "Value": request.run_id}],
    }
    if kms_key_id and supports_kms_volume(dep.instance_type):
        spec["KmsKeyId"] = kms_key_id
    ami = inference_ami(dep.instance_type)
    if ami:
        spec["ProductionVariants"][0]["InferenceAmiVersion"] = ami
    return spec


def deployment_config(alarms: list[str]) -> dict:
    """Blue/green, all traffic at once after a baking period, rolled back on any alarm."""
    cfg = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300},
            "TerminationWaitInSeconds": 600,
            "MaximumExecutionTimeoutInSeconds": 3600,
        }
    }
    if alarms:
        cfg["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return cfg


def _ensure_model(request, sm, model_package_arn: str, role_arn: str, vpc: dict | None) -> bool:
    """Create the run's SageMaker model from the registered package; False if it exists.

    With ``vpc`` (``{"Subnets", "SecurityGroupIds"}``) the model runs in the stage's VPC like
    the jobs. Network isolation is not set: the container loads the base model itself (from
    the Hugging Face Hub, or from S3 with its role), which an isolated container cannot.
    """
    name = request.jobs.model
    if _describe(sm.describe_model, "sagemaker:DescribeModel", ModelName=name):
        return False
    kw = {"VpcConfig": vpc} if vpc else {}
    call(
        "sagemaker:CreateModel",
        sm.create_model,
        ModelName=name,
        PrimaryContainer={"ModelPackageName": model_package_arn},
        ExecutionRoleArn=role_arn,
        Tags=[{"Key": "codetune:runId", "Value": request.run_id}],
        **kw,
    )
    return True


def _ensure_endpoint_config(request, sm, kms_key_id: str | None) -> bool:
    name = request.jobs.endpoint_config
    if _describe(
        sm.describe_endpoint_config, "sagemaker:DescribeEndpointConfig", EndpointConfigName=name
    ):
        return False
    call(
        "sagemaker:CreateEndpointConfig",
        sm.create_endpoint_config,
        **endpoint_config_spec(request, kms_key_id),
    )
    return True


def _resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def ensure_autoscaling(request, aas) -> str:
    """Target tracking on invocations per instance; 'registered' or 'unchanged'."""
    dep = request.deployment
    rid = _resource_id(dep.endpoint_name)
    targets = call(
        "application-autoscaling:DescribeScalableTargets",
        aas.describe_scalable_targets,
        ServiceNamespace="sagemaker",
        ResourceIds=[rid],
        ScalableDimension=SCALABLE_DIMENSION,
    ).get("ScalableTargets", [])
    policies = call(
        "application-autoscaling:DescribeScalingPolicies",
        aas.describe_scaling_policies,
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyNames=[POLICY_NAME],
    ).get("ScalingPolicies", [])
    target_ok = any(
        t["MinCapacity"] == dep.min_capacity and t["MaxCapacity"] == dep.max_capacity
        for t in targets
    )
    policy_ok = any(
        p.get("TargetTrackingScalingPolicyConfiguration", {}).get("TargetValue")
        == float(dep.invocations_per_instance)
        for p in policies
    )
    if target_ok and policy_ok:
        return "unchanged"
    call(
        "application-autoscaling:RegisterScalableTarget",
        aas.register_scalable_target,
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=dep.min_capacity,
        MaxCapacity=dep.max_capacity,
    )
    call(
        "application-autoscaling:PutScalingPolicy",
        aas.put_scaling_policy,
        PolicyName=POLICY_NAME,
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(dep.invocations_per_instance),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": SCALE_IN_COOLDOWN,
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN,
        },
    )
    return "registered"


def _remove_autoscaling(request, aas) -> None:
    """SageMaker refuses an update that changes the instance type of a scaled variant."""
    rid = _resource_id(request.deployment.endpoint_name)
    for op, fn, kw in (
        ("DeleteScalingPolicy", aas.delete_scaling_policy, {"PolicyName": POLICY_NAME}),
        ("DeregisterScalableTarget", aas.deregister_scalable_target, {}),
    ):
        try:
            fn(
                ServiceNamespace="sagemaker",
                ResourceId=rid,
                ScalableDimension=SCALABLE_DIMENSION,
                **kw,
            )
        except ClientError as e:
            if "ObjectNotFound" not in str(e) and not is_not_found(e):
                raise classify(e, f"application-autoscaling:{op}") from e


def deploy_endpoint(
    request,
    *,
    model_package_arn: str,
    role_arn: str,
    kms_key_id: str | None,
    rollback_alarms: list[str],
    sagemaker,
    autoscaling,
    previous: dict | None = None,
    vpc: dict | None = None,
) -> dict:
    """Create-or-update the endpoint towards this run's config; one step per call.

    Returns ``{"endpointName", "endpointConfigName", "action", "status", "autoscaling"}``
    with action ``created`` | ``updated`` | ``unchanged`` | ``waiting`` | ``deleting`` and
    the endpoint's status. An endpoint left ``Failed`` by an earlier deployment is deleted
    (the only operation SageMaker allows on it) and created anew. Raises
    ``DeploymentFailed`` when this run's endpoint failed or SageMaker rolled this run's update
    back; ``RetryableError`` when another update is in progress.
    """
    dep = request.deployment
    name, cfg = dep.endpoint_name, request.jobs.endpoint_config
    _ensure_model(request, sagemaker, model_package_arn, role_arn, vpc)
    _ensure_endpoint_config(request, sagemaker, kms_key_id)
    current = _describe(
        sagemaker.describe_endpoint, "sagemaker:DescribeEndpoint", EndpointName=name
    )
    result = {"endpointName": name, "endpointConfigName": cfg, "autoscaling": "pending"}

    if current is None:
        call(
            "sagemaker:CreateEndpoint",
            sagemaker.create_endpoint,
            EndpointName=name,
            EndpointConfigName=cfg,
            Tags=[{"Key": "codetune:runId", "Value": request.run_id}],
        )
        return {**result, "action": "created", "status": "Creating"}

    status = current["EndpointStatus"]
    ours = previous and previous.get("action") in ("created", "updated", "waiting")
    if status == "Deleting":
        return {**result, "action": "deleting", "status": status}
    if status == "Failed" and not ours:
        # Failed before this run's deployment started (an earlier run, or an earlier
        # execution of this one): DeleteEndpoint is the only operation SageMaker allows on
        # it; the next calls wait for it to go, then create it with this run's config.
        _remove_autoscaling(request, autoscaling)
        call("sagemaker:DeleteEndpoint", sagemaker.delete_endpoint, EndpointName=name)
        return {**result, "action": "deleting", "status": "Deleting"}
    if current["EndpointConfigName"] == cfg:
        if status == "Failed":
            raise DeploymentFailed(
                f"endpoint {name} failed with config {cfg}: {current.get('FailureReason', 'no reason given')}"
            )
        if status != "InService":
            return {**result, "action": "waiting", "status": status}
        return {
            **result,
            "action": "unchanged",
            "status": status,
            "autoscaling": ensure_autoscaling(request, autoscaling),
        }

    # The endpoint serves another config.
    if status in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
        if (
            previous
            and previous.get("action") in ("updated", "waiting")
            and status == "RollingBack"
        ):
            raise DeploymentFailed(
                f"SageMaker is rolling endpoint {name} back from {cfg}: an alarm fired"
            )
        if previous and previous.get("action") in ("updated", "waiting"):
            return {**result, "action": "waiting", "status": status}
        raise RetryableError(
            f"endpoint {name} is {status} (another deployment in progress); retry later"
        )
    if previous and previous.get("action") in ("updated", "waiting") and status == "InService":
        raise DeploymentFailed(
            f"SageMaker rolled endpoint {name} back to {current['EndpointConfigName']}: "
            f"the update to {cfg} tripped a rollback alarm or failed ({current.get('FailureReason', 'no reason given')})"
        )
    old_cfg = (
        _describe(
            sagemaker.describe_endpoint_config,
            "sagemaker:DescribeEndpointConfig",
            EndpointConfigName=current["EndpointConfigName"],
        )
        or {}
    )
    old_types = {v.get("InstanceType") for v in old_cfg.get("ProductionVariants", [])}
    if old_types and old_types != {dep.instance_type}:
        _remove_autoscaling(request, autoscaling)
    call(
        "sagemaker:UpdateEndpoint",
        sagemaker.update_endpoint,
        EndpointName=name,
        EndpointConfigName=cfg,
        RetainAllVariantProperties=False,
        DeploymentConfig=deployment_config(rollback_alarms),
    )
    return {**result, "action": "updated", "status": "Updating"}
