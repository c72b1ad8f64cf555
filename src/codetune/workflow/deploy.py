"""DeployEndpoint: the run's adapter onto the stage's endpoint, in one of two modes.

``components`` (default): the endpoint hosts the base model as an inference component
(``<endpoint>-base``, created by the first run with its own model and no adapter) and each
run's adapter as an adapter component (``<endpoint>-<adapter>``: ``BaseInferenceComponentName``
+ ``Container.ArtifactUrl``). A later run adds its adapter component, or replaces its
artifact with UpdateInferenceComponent when the name exists, and never updates or deletes the
base. Autoscaling acts on the base component's copies (``inference-component/<base>``,
``DesiredCopyCount``), optionally down to zero.

``single-model``: one model per endpoint; a run creates the endpoint or updates it
blue/green with alarm-based rollback (for instance types or regions without components).

One call does at most one mutating step and returns the endpoint's status; the state machine
calls it again after a Wait until ``status`` is ``InService`` (SageMaker takes minutes, a
Lambda must not wait that long). Re-running with the same input when the endpoint already
serves this run's adapter changes nothing.
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
        "Tags": _run_tags(request),
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


def _run_tags(request) -> list[dict]:
    return [{"Key": "codetune:runId", "Value": request.run_id}]


def _reason(desc: dict) -> str:
    """SageMaker's FailureReason of a described resource."""
    return desc.get("FailureReason", "no reason given")


def _create_model_once(
    request, sm, name: str, container: dict, role_arn: str, vpc: dict | None
) -> bool:
    """Create the SageMaker model ``name`` with ``container`` as its primary container, tagged
    with the run; False (and nothing created) when it exists.

    With ``vpc`` (``{"Subnets", "SecurityGroupIds"}``) the model runs in the stage's VPC like
    the jobs. Network isolation is not set: the container loads the base model itself (from
    the Hugging Face Hub, or from S3 with its role), which an isolated container cannot.
    """
    if _describe(sm.describe_model, "sagemaker:DescribeModel", ModelName=name):
        return False
    kw = {"VpcConfig": vpc} if vpc else {}
    call(
        "sagemaker:CreateModel",
        sm.create_model,
        ModelName=name,
        PrimaryContainer=container,
        ExecutionRoleArn=role_arn,
        Tags=_run_tags(request),
        **kw,
    )
    return True


def _ensure_model(request, sm, model_package_arn: str, role_arn: str, vpc: dict | None) -> bool:
    """Create the run's SageMaker model from the registered package; False if it exists."""
    return _create_model_once(
        request, sm, request.jobs.model, {"ModelPackageName": model_package_arn}, role_arn, vpc
    )


def _ensure_endpoint_config(sm, spec: dict) -> bool:
    """CreateEndpointConfig with ``spec`` unless its name exists; False if it did."""
    name = spec["EndpointConfigName"]
    if _describe(
        sm.describe_endpoint_config, "sagemaker:DescribeEndpointConfig", EndpointConfigName=name
    ):
        return False
    call("sagemaker:CreateEndpointConfig", sm.create_endpoint_config, **spec)
    return True


def _describe_endpoint(sm, name: str) -> dict | None:
    return _describe(sm.describe_endpoint, "sagemaker:DescribeEndpoint", EndpointName=name)


def _serving_config(sm, endpoint: dict) -> dict:
    """The endpoint config an endpoint serves now (``{}`` when it is gone)."""
    return (
        _describe(
            sm.describe_endpoint_config,
            "sagemaker:DescribeEndpointConfig",
            EndpointConfigName=endpoint["EndpointConfigName"],
        )
        or {}
    )


def _create_endpoint(request, sm, result: dict) -> dict:
    """CreateEndpoint with this run's endpoint config; the step's result."""
    call(
        "sagemaker:CreateEndpoint",
        sm.create_endpoint,
        EndpointName=request.deployment.endpoint_name,
        EndpointConfigName=request.jobs.endpoint_config,
        Tags=_run_tags(request),
    )
    return {**result, "action": "created", "status": "Creating"}


def _clear_endpoint(
    request, sm, status: str, result: dict, *, ours: bool, before_delete=None
) -> dict | None:
    """The step for an endpoint on its way out: wait while it is Deleting; delete one left
    Failed before this run's deployment started (``not ours``: an earlier run, or an earlier
    execution of this one), since DeleteEndpoint is the only operation SageMaker allows on it;
    the next calls wait for it to go, then create it with this run's config. None otherwise.
    ``before_delete()`` runs before DeleteEndpoint."""
    if status == "Deleting":
        return {**result, "action": "deleting", "status": status}
    if status == "Failed" and not ours:
        if before_delete is not None:
            before_delete()
        call(
            "sagemaker:DeleteEndpoint",
            sm.delete_endpoint,
            EndpointName=request.deployment.endpoint_name,
        )
        return {**result, "action": "deleting", "status": "Deleting"}
    return None


def _resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def ensure_autoscaling(request, aas) -> str:
    """Target tracking on invocations per instance; 'registered' or 'unchanged'."""
    dep = request.deployment
    rid = _resource_id(dep.endpoint_name)
    scope = {"ServiceNamespace": "sagemaker", "ScalableDimension": SCALABLE_DIMENSION}
    targets, policies = _scaling_of(aas, scope, rid, [POLICY_NAME])
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
    _track(
        aas,
        scope,
        rid,
        capacity=(dep.min_capacity, dep.max_capacity),
        policy_name=POLICY_NAME,
        metric_type="SageMakerVariantInvocationsPerInstance",
        target_value=float(dep.invocations_per_instance),
    )
    return "registered"


def _scaling_of(
    aas, scope: dict, rid: str, policy_names: list[str]
) -> tuple[list[dict], list[dict]]:
    """The scalable targets of ``rid`` and its scaling policies of ``policy_names``."""
    targets = call(
        "application-autoscaling:DescribeScalableTargets",
        aas.describe_scalable_targets,
        ResourceIds=[rid],
        **scope,
    ).get("ScalableTargets", [])
    policies = call(
        "application-autoscaling:DescribeScalingPolicies",
        aas.describe_scaling_policies,
        ResourceId=rid,
        PolicyNames=policy_names,
        **scope,
    ).get("ScalingPolicies", [])
    return targets, policies


def _track(
    aas,
    scope: dict,
    rid: str,
    *,
    capacity: tuple[int, int],
    policy_name: str,
    metric_type: str,
    target_value: float,
) -> None:
    """Register ``rid`` as scalable within ``capacity`` (min, max) and put the target
    tracking policy that keeps ``metric_type`` at ``target_value``."""
    call(
        "application-autoscaling:RegisterScalableTarget",
        aas.register_scalable_target,
        ResourceId=rid,
        MinCapacity=capacity[0],
        MaxCapacity=capacity[1],
        **scope,
    )
    call(
        "application-autoscaling:PutScalingPolicy",
        aas.put_scaling_policy,
        PolicyName=policy_name,
        ResourceId=rid,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": target_value,
            "PredefinedMetricSpecification": {"PredefinedMetricType": metric_type},
            "ScaleInCooldown": SCALE_IN_COOLDOWN,
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN,
        },
        **scope,
    )


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
    cloudwatch=None,
    previous: dict | None = None,
    vpc: dict | None = None,
) -> dict:
    """One step towards this run's adapter being served, in ``request.deployment.mode``.

    ``components``: :func:`deploy_components` (``cloudwatch`` is needed with
    ``baseScaleToZero``); ``single-model``: :func:`deploy_single_model`.
    """
    both = {
        "model_package_arn": model_package_arn,
        "role_arn": role_arn,
        "kms_key_id": kms_key_id,
        "sagemaker": sagemaker,
        "autoscaling": autoscaling,
        "previous": previous,
        "vpc": vpc,
    }
    if request.deployment.mode == "components":
        return deploy_components(request, cloudwatch=cloudwatch, **both)
    return deploy_single_model(request, rollback_alarms=rollback_alarms, **both)


def deploy_single_model(
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
    """Create-or-update the single-model endpoint towards this run's config; one step per call.

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
    _ensure_endpoint_config(sagemaker, endpoint_config_spec(request, kms_key_id))
    current = _describe_endpoint(sagemaker, name)
    result = {"endpointName": name, "endpointConfigName": cfg, "autoscaling": "pending"}
    if current is None:
        return _create_endpoint(request, sagemaker, result)

    status = current["EndpointStatus"]
    # this run's deployment is under way: created by it, or updating to its config
    ours = bool(previous) and previous.get("action") in ("created", "updated", "waiting")
    cleared = _clear_endpoint(
        request,
        sagemaker,
        status,
        result,
        ours=ours,
        before_delete=lambda: _remove_autoscaling(request, autoscaling),
    )
    if cleared is not None:
        return cleared
    if current["EndpointConfigName"] == cfg:
        return _on_this_config(request, autoscaling, current, result)
    updating = bool(previous) and previous.get("action") in ("updated", "waiting")
    return _update_to_this_config(
        request,
        sagemaker,
        autoscaling,
        current,
        result,
        updating=updating,
        rollback_alarms=rollback_alarms,
    )


def _on_this_config(request, autoscaling, current: dict, result: dict) -> dict:
    """The endpoint serves this run's config: wait for it, then keep its autoscaling right."""
    status = current["EndpointStatus"]
    if status == "Failed":
        raise DeploymentFailed(
            f"endpoint {request.deployment.endpoint_name} failed with config "
            f"{request.jobs.endpoint_config}: {_reason(current)}"
        )
    if status != "InService":
        return {**result, "action": "waiting", "status": status}
    return {
        **result,
        "action": "unchanged",
        "status": status,
        "autoscaling": ensure_autoscaling(request, autoscaling),
    }


def _update_to_this_config(
    request,
    sm,
    autoscaling,
    current: dict,
    result: dict,
    *,
    updating: bool,
    rollback_alarms: list[str],
) -> dict:
    """The endpoint serves another config: update it blue/green to this run's, unless it is
    busy (this run's update: wait; another's: retry later) or rolled this run's update back."""
    dep = request.deployment
    name, cfg = dep.endpoint_name, request.jobs.endpoint_config
    status = current["EndpointStatus"]
    if status in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
        if updating and status == "RollingBack":
            raise DeploymentFailed(
                f"SageMaker is rolling endpoint {name} back from {cfg}: an alarm fired"
            )
        if updating:
            return {**result, "action": "waiting", "status": status}
        raise RetryableError(
            f"endpoint {name} is {status} (another deployment in progress); retry later"
        )
    if updating and status == "InService":
        raise DeploymentFailed(
            f"SageMaker rolled endpoint {name} back to {current['EndpointConfigName']}: "
            f"the update to {cfg} tripped a rollback alarm or failed ({_reason(current)})"
        )
    old_cfg = _serving_config(sm, current)
    old_types = {v.get("InstanceType") for v in old_cfg.get("ProductionVariants", [])}
    if old_types and old_types != {dep.instance_type}:
        _remove_autoscaling(request, autoscaling)
    call(
        "sagemaker:UpdateEndpoint",
        sm.update_endpoint,
        EndpointName=name,
        EndpointConfigName=cfg,
        RetainAllVariantProperties=False,
        DeploymentConfig=deployment_config(rollback_alarms),
    )
    return {**result, "action": "updated", "status": "Updating"}


# -- inference components ----------------------------------------------------------------------

COMPONENT_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
COMPONENT_POLICY = "codetune-invocations-per-copy"
FROM_ZERO_POLICY = "codetune-scale-out-from-zero"
# Memory reserved for the base component's copy; the GPUs are what it really claims. The
# container needs the rest of the host for loading, and SageMaker keeps some for itself.
BASE_MEMORY_MB = 1024
BUSY = ("Creating", "Updating")
# The base container starts without adapters, so vLLM cannot size its LoRA slots from them:
# the base takes adapters up to this rank (vLLM's rank slots: 16, 32, 64, ...; the shipped
# configs train 16 and 32). ValidateRequest refuses a run whose adapter would not fit.
BASE_MAX_LORA_RANK = 64


def base_compute(instance_type: str) -> dict:
    """ComputeResourceRequirements of one base-component copy on ``instance_type``: every
    GPU of the instance (vLLM shards the model over them), else one CPU core.

    Raises ConfigError for a GPU instance type whose GPU count codetune does not know."""
    from codetune.serve.vllm_args import gpus_for_instance

    gpus = gpus_for_instance(instance_type)
    if gpus:
        return {
            "NumberOfAcceleratorDevicesRequired": float(gpus.count),
            "MinMemoryRequiredInMb": BASE_MEMORY_MB,
        }
    return {"NumberOfCpuCoresRequired": 1.0, "MinMemoryRequiredInMb": BASE_MEMORY_MB}


def component_endpoint_config_spec(
    request, kms_key_id: str | None, role_arn: str, vpc: dict | None
) -> dict:
    """CreateEndpointConfig for an endpoint of inference components: no model in the
    variant, the execution role and VPC at the config (the components' containers use them),
    SageMaker-managed instance scaling within minCapacity..maxCapacity (from 0 with
    baseScaleToZero), requests routed to the copy with the fewest outstanding."""
    dep = request.deployment
    variant = {
        "VariantName": VARIANT,
        "InstanceType": dep.instance_type,
        "InitialInstanceCount": dep.instance_count,
        "ManagedInstanceScaling": {
            "Status": "ENABLED",
            "MinInstanceCount": 0 if dep.base_scale_to_zero else dep.min_capacity,
            "MaxInstanceCount": dep.max_capacity,
        },
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    }
    ami = inference_ami(dep.instance_type)
    if ami:
        variant["InferenceAmiVersion"] = ami
    spec = {
        "EndpointConfigName": request.jobs.endpoint_config,
        "ProductionVariants": [variant],
        "ExecutionRoleArn": role_arn,
        "Tags": _run_tags(request),
    }
    if vpc:
        spec["VpcConfig"] = vpc
    if kms_key_id and supports_kms_volume(dep.instance_type):
        spec["KmsKeyId"] = kms_key_id
    return spec


def base_component_spec(request) -> dict:
    """CreateInferenceComponent of the endpoint's base model (its own model, no adapter)."""
    dep = request.deployment
    return {
        "InferenceComponentName": dep.base_component,
        "EndpointName": dep.endpoint_name,
        "VariantName": VARIANT,
        "Specification": {
            "ModelName": request.jobs.base_model,
            "StartupParameters": {
                "ModelDataDownloadTimeoutInSeconds": dep.model_data_download_timeout_seconds,
                "ContainerStartupHealthCheckTimeoutInSeconds": dep.startup_health_check_timeout_seconds,
            },
            "ComputeResourceRequirements": base_compute(dep.instance_type),
        },
        "RuntimeConfig": {"CopyCount": dep.instance_count},
        "Tags": _run_tags(request),
    }


def adapter_specification(request, artifact_url: str) -> dict:
    """The adapter component's Specification: the base it runs in and where its adapter is.
    No compute and no copies: an adapter uses its base component's."""
    return {
        "BaseInferenceComponentName": request.deployment.base_component,
        "Container": {"ArtifactUrl": artifact_url},
    }


def _package_container(sm, model_package_arn: str) -> dict:
    desc = call(
        "sagemaker:DescribeModelPackage",
        sm.describe_model_package,
        ModelPackageName=model_package_arn,
    )
    return desc["InferenceSpecification"]["Containers"][0]


def _ensure_base_model(request, sm, container: dict, role_arn: str, vpc: dict | None) -> None:
    """The base component's model: the package's image and environment without its model
    data (the adapter), so the container starts with the base model alone."""
    from codetune.serve.config import ENV_MAX_LORA_RANK
    from codetune.workflow.registry import ENV_ADAPTER_NAME

    env = {k: v for k, v in container.get("Environment", {}).items() if k != ENV_ADAPTER_NAME}
    env.setdefault(ENV_MAX_LORA_RANK, str(BASE_MAX_LORA_RANK))
    _create_model_once(
        request,
        sm,
        request.jobs.base_model,
        {"Image": container["Image"], "Environment": env},
        role_arn,
        vpc,
    )


def _check_base_model(request, sm, base: dict, container: dict) -> None:
    """The base component serves the base model this run's adapter was trained on."""
    from codetune.workflow.registry import ENV_BASE_MODEL

    model = (base.get("Specification") or {}).get("ModelName")
    desc = (
        _describe(sm.describe_model, "sagemaker:DescribeModel", ModelName=model) if model else None
    )
    served = ((desc or {}).get("PrimaryContainer") or {}).get("Environment", {}).get(ENV_BASE_MODEL)
    wanted = container.get("Environment", {}).get(ENV_BASE_MODEL)
    if served != wanted:
        dep = request.deployment
        raise DeploymentFailed(
            f"base component {dep.base_component} of endpoint {dep.endpoint_name} serves base "
            f"model {served!r}, but this run's adapter was trained on {wanted!r}: deploy it to "
            "an endpoint of that base model (deployment.endpointName) or delete the endpoint's "
            "components first"
        )


def deploy_components(
    request,
    *,
    model_package_arn: str,
    role_arn: str,
    kms_key_id: str | None,
    sagemaker,
    autoscaling,
    cloudwatch=None,
    previous: dict | None = None,
    vpc: dict | None = None,
) -> dict:
    """One step towards this run's adapter component being InService on the endpoint.

    Returns ``{"endpointName", "endpointConfigName", "baseComponent", "adapterComponent",
    "action", "status", "autoscaling"}``; action ``created`` (endpoint) | ``base-created`` |
    ``adapter-created`` | ``updated`` (the adapter's artifact replaced) | ``unchanged`` |
    ``waiting`` | ``deleting``, status that of what the action is about. Raises
    ``DeploymentFailed`` when the endpoint hosts a single model, its base component failed or
    serves another base model, or this run's adapter component failed; ``RetryableError``
    while another run changes the same adapter component.
    """
    dep = request.deployment
    result = {
        "endpointName": dep.endpoint_name,
        "endpointConfigName": request.jobs.endpoint_config,
        "baseComponent": dep.base_component,
        "adapterComponent": dep.adapter_component,
        "autoscaling": "pending",
    }
    acted = (previous or {}).get("action")
    step = _component_endpoint(
        request, sagemaker, result, acted=acted, kms_key_id=kms_key_id, role_arn=role_arn, vpc=vpc
    )
    if step is not None:
        return step
    container = _package_container(sagemaker, model_package_arn)
    step = _base_component(request, sagemaker, result, container, role_arn=role_arn, vpc=vpc)
    if step is not None:
        return step
    return _adapter_component(
        request,
        sagemaker,
        result,
        container["ModelDataUrl"],
        previous=previous,
        autoscaling=autoscaling,
        cloudwatch=cloudwatch,
    )


def _component_endpoint(
    request, sm, result: dict, *, acted: str | None, kms_key_id, role_arn: str, vpc: dict | None
) -> dict | None:
    """The endpoint's step (create it, wait for it, clear an earlier run's failed one); None
    when it is InService and takes inference components."""
    name, cfg = request.deployment.endpoint_name, request.jobs.endpoint_config
    current = _describe_endpoint(sm, name)
    if current is None:
        _ensure_endpoint_config(
            sm, component_endpoint_config_spec(request, kms_key_id, role_arn, vpc)
        )
        return _create_endpoint(request, sm, result)
    status = current["EndpointStatus"]
    ours = acted == "created" or (acted == "waiting" and current["EndpointConfigName"] == cfg)
    cleared = _clear_endpoint(request, sm, status, result, ours=ours)
    if cleared is not None:
        return cleared
    if status == "Failed":
        raise DeploymentFailed(f"endpoint {name} failed: {_reason(current)}")
    if status != "InService":
        return {**result, "action": "waiting", "status": status}
    if any(v.get("ModelName") for v in _serving_config(sm, current).get("ProductionVariants", [])):
        raise DeploymentFailed(
            f"endpoint {name} hosts a single model (config {current['EndpointConfigName']}), "
            "so it cannot take inference components: set deployment.mode to "
            '"single-model", or delete the endpoint to let this run create it with components'
        )
    return None


def _base_component(
    request, sm, result: dict, container: dict, *, role_arn: str, vpc: dict | None
) -> dict | None:
    """The base component's step (create it with its model, wait for it); None when it is
    InService with the base model this run's adapter was trained on."""
    dep = request.deployment
    base = _describe_component(sm, dep.base_component)
    if base is None:
        _ensure_base_model(request, sm, container, role_arn, vpc)
        call(
            "sagemaker:CreateInferenceComponent",
            sm.create_inference_component,
            **base_component_spec(request),
        )
        return {**result, "action": "base-created", "status": "Creating"}
    base_status = base["InferenceComponentStatus"]
    if base_status == "Failed":
        raise DeploymentFailed(
            f"base component {dep.base_component} failed "
            f"({_reason(base)}); delete it (aws sagemaker "
            f"delete-inference-component --inference-component-name {dep.base_component}) "
            "and run again"
        )
    if base_status != "InService":
        return {**result, "action": "waiting", "status": base_status}
    _check_base_model(request, sm, base, container)
    return None


def _adapter_component(
    request, sm, result: dict, artifact: str, *, previous: dict | None, autoscaling, cloudwatch
) -> dict:
    """The adapter component's step: create it, replace its artifact, wait for it, clear an
    earlier run's failed one; once it serves ``artifact``, the base's autoscaling."""
    dep = request.deployment
    acted = (previous or {}).get("action")
    adapter = _describe_component(sm, dep.adapter_component)
    if adapter is None:
        call(
            "sagemaker:CreateInferenceComponent",
            sm.create_inference_component,
            InferenceComponentName=dep.adapter_component,
            EndpointName=dep.endpoint_name,
            Specification=adapter_specification(request, artifact),
            Tags=_run_tags(request),
        )
        return {**result, "action": "adapter-created", "status": "Creating"}
    adapter_status = adapter["InferenceComponentStatus"]
    served = ((adapter.get("Specification") or {}).get("Container") or {}).get("ArtifactUrl")
    ours = acted in ("adapter-created", "updated", "waiting")
    # set while this run's UpdateInferenceComponent is in progress (a rollback check below)
    updating = acted == "updated" or bool((previous or {}).get("updating"))
    if adapter_status in BUSY:
        if served == artifact or ours:
            extra = {"updating": True} if updating else {}
            return {**result, "action": "waiting", "status": adapter_status, **extra}
        raise RetryableError(
            f"adapter component {dep.adapter_component} is {adapter_status} (another "
            "deployment of this adapter name in progress); retry later"
        )
    if adapter_status == "Deleting":
        return {**result, "action": "deleting", "status": adapter_status}
    if adapter_status == "Failed":
        if ours and served == artifact:
            raise DeploymentFailed(
                f"adapter component {dep.adapter_component} failed: {_reason(adapter)}"
            )
        # an earlier run's failed component of this name: removed, then created anew
        call(
            "sagemaker:DeleteInferenceComponent",
            sm.delete_inference_component,
            InferenceComponentName=dep.adapter_component,
        )
        return {**result, "action": "deleting", "status": "Deleting"}
    if served != artifact:
        if updating:
            raise DeploymentFailed(
                f"adapter component {dep.adapter_component} is InService with {served}, not "
                f"this run's {artifact}: SageMaker rolled the update back ({_reason(adapter)})"
            )
        call(
            "sagemaker:UpdateInferenceComponent",
            sm.update_inference_component,
            InferenceComponentName=dep.adapter_component,
            Specification=adapter_specification(request, artifact),
        )
        return {**result, "action": "updated", "status": "Updating"}
    return {
        **result,
        "action": "unchanged",
        "status": "InService",
        "autoscaling": ensure_component_autoscaling(request, autoscaling, cloudwatch),
    }


def _describe_component(sm, name: str) -> dict | None:
    return _describe(
        sm.describe_inference_component,
        "sagemaker:DescribeInferenceComponent",
        InferenceComponentName=name,
    )


def component_resource_id(component: str) -> str:
    return f"inference-component/{component}"


def from_zero_alarm_name(request) -> str:
    return f"{request.deployment.base_component}-scale-out-from-zero"


def ensure_component_autoscaling(request, aas, cloudwatch=None) -> str:
    """Target tracking on the base component's invocations per copy, its copies within
    minCapacity..maxCapacity (0..maxCapacity with baseScaleToZero, plus the step policy and
    alarm that add a copy when a request finds none); 'registered' or 'unchanged'.

    Adapter components have no copies of their own: they scale with their base."""
    dep = request.deployment
    rid = component_resource_id(dep.base_component)
    lo = 0 if dep.base_scale_to_zero else dep.min_capacity
    scope = {"ServiceNamespace": "sagemaker", "ScalableDimension": COMPONENT_DIMENSION}
    wanted = [COMPONENT_POLICY] + ([FROM_ZERO_POLICY] if dep.base_scale_to_zero else [])
    targets, policies = _scaling_of(aas, scope, rid, wanted)
    target_ok = any(
        t["MinCapacity"] == lo and t["MaxCapacity"] == dep.max_capacity for t in targets
    )
    tracking_ok = any(
        p["PolicyName"] == COMPONENT_POLICY
        and p.get("TargetTrackingScalingPolicyConfiguration", {}).get("TargetValue")
        == float(dep.invocations_per_instance)
        for p in policies
    )
    from_zero_ok = not dep.base_scale_to_zero or any(
        p["PolicyName"] == FROM_ZERO_POLICY for p in policies
    )
    if target_ok and tracking_ok and from_zero_ok:
        return "unchanged"
    _track(
        aas,
        scope,
        rid,
        capacity=(lo, dep.max_capacity),
        policy_name=COMPONENT_POLICY,
        metric_type="SageMakerInferenceComponentInvocationsPerCopy",
        target_value=float(dep.invocations_per_instance),
    )
    if dep.base_scale_to_zero:
        # Target tracking never scales out from zero copies: a step policy on the alarm of
        # requests that found no capacity adds the first copy ("Scale an endpoint to zero
        # instances", SageMaker developer guide).
        policy = call(
            "application-autoscaling:PutScalingPolicy",
            aas.put_scaling_policy,
            PolicyName=FROM_ZERO_POLICY,
            ResourceId=rid,
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "MetricAggregationType": "Maximum",
                "Cooldown": SCALE_OUT_COOLDOWN,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
            },
            **scope,
        )
        call(
            "cloudwatch:PutMetricAlarm",
            cloudwatch.put_metric_alarm,
            AlarmName=from_zero_alarm_name(request),
            AlarmDescription=f"a request found no copy of {dep.base_component}: add one",
            Namespace="AWS/SageMaker",
            MetricName="NoCapacityInvocationFailures",
            Dimensions=[{"Name": "InferenceComponentName", "Value": dep.base_component}],
            Statistic="Maximum",
            Period=60,
            EvaluationPeriods=1,
            DatapointsToAlarm=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="missing",
            AlarmActions=[policy["PolicyARN"]],
        )
    return "registered"
