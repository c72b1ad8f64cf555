"""The workflow's glue Lambdas and the layer carrying `codetune` + its dependencies.

No Docker at synth: the layer is assembled by a local bundler (plain file copies) from
  - `.cache/lambda-deps/python` — jsonschema, Powertools, PyYAML installed by `make lambda-deps`
    as wheels for the Lambda runtime (python3.14, x86_64; rpds-py is compiled, so the
    synthesizing venv's own copy would not load there),
  - `src/codetune` and `schemas/` (found by `codetune.workflow.schemas` next to the package),
  - `training_image/configs` (the planner resolves `"instanceType": "auto"` from them).
boto3 comes from the runtime.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, Duration, ILocalBundling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.grants import allow_key
from cdk.nag import acknowledge, checkov_skip

RUNTIME = lambda_.Runtime.PYTHON_3_14
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.dist-info", "bin", "tests")


@jsii.implements(ILocalBundling)
class _CopyLayer:
    """Local bundling that copies the layer's parts into the asset directory (never Docker)."""

    def __init__(self, *, deps_dir: Path, package_dir: Path, schemas_dir: Path, configs_dir: Path):
        self._parts = (deps_dir, package_dir, schemas_dir, configs_dir)

    def try_bundle(self, output_dir: str, *, image=None, **_options) -> bool:
        deps_dir, package_dir, schemas_dir, configs_dir = self._parts
        out = Path(output_dir)
        shutil.copytree(deps_dir, out / "python", ignore=_IGNORE, dirs_exist_ok=True)
        shutil.copytree(package_dir, out / "python" / "codetune", ignore=_IGNORE)
        shutil.copytree(schemas_dir, out / "python" / "schemas", ignore=_IGNORE)
        shutil.copytree(configs_dir, out / "training_image" / "configs", ignore=_IGNORE)
        return True


@dataclass(frozen=True)
class FunctionSpec:
    """One glue function: its directory under lambdas/, timeout and environment."""

    name: str
    timeout: Duration
    environment: dict[str, str]
    memory_mb: int = 256
    # Why else this handler needs Resource "*" (besides X-Ray), for the cdk-nag acknowledgement.
    wildcard_reason: str = ""


class WorkflowFunctions(Construct):
    """A shared `codetune` layer and one Lambda per spec (`self.functions[name]`)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        lambdas_dir: Path,
        deps_dir: Path,
        package_dir: Path,
        schemas_dir: Path,
        configs_dir: Path,
        specs: list[FunctionSpec],
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        reserved_concurrency: int | None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not (deps_dir / "jsonschema").is_dir():
            raise FileNotFoundError(
                f"{deps_dir} has no jsonschema: run `make lambda-deps` (installs the Lambda "
                "layer's dependencies for the Lambda runtime) before synthesizing"
            )
        self.layer = _codetune_layer(
            self,
            deps_dir=deps_dir,
            package_dir=package_dir,
            schemas_dir=schemas_dir,
            configs_dir=configs_dir,
        )
        self.functions: dict[str, lambda_.Function] = {}
        for spec in specs:
            self.functions[spec.name] = self._glue_function(
                spec,
                handler_dir=lambdas_dir / spec.name,
                key=key,
                log_retention=log_retention,
                reserved_concurrency=reserved_concurrency,
            )

    def _glue_function(
        self,
        spec: FunctionSpec,
        *,
        handler_dir: Path,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        reserved_concurrency: int | None,
    ) -> lambda_.Function:
        """One handler with its own encrypted log group and a role that writes only there."""
        if not (handler_dir / "handler.py").is_file():
            raise FileNotFoundError(f"{handler_dir / 'handler.py'} is missing")
        log_group = logs.LogGroup(
            self,
            f"{_pascal(spec.name)}Logs",
            retention=log_retention,
            encryption_key=key,
        )
        # Own role instead of AWSLambdaBasicExecutionRole (a managed policy writing to
        # every log group): this role writes only its function's log group.
        role = iam.Role(
            self,
            f"{_pascal(spec.name)}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"codetune {spec.name} Lambda",
        )
        log_group.grant_write(role)
        allow_key(role, key, encrypt=False)  # environment variables are encrypted with it
        function = lambda_.Function(
            self,
            _pascal(spec.name),
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(
                str(handler_dir), exclude=["__pycache__", "*.pyc", "tests"]
            ),
            layers=[self.layer],
            timeout=spec.timeout,
            memory_size=spec.memory_mb,
            environment={
                "POWERTOOLS_SERVICE_NAME": f"codetune-{spec.name}",
                "CODETUNE_CONFIG_DIR": "/opt/training_image/configs",
                **spec.environment,
            },
            environment_encryption=key,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            reserved_concurrent_executions=reserved_concurrency,
            role=role,
        )
        acknowledge(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray tracing: xray:PutTraceSegments/PutTelemetryRecords have no resource type."
            + (f" {spec.wildcard_reason}" if spec.wildcard_reason else ""),
        )
        _skip_checkov_findings(function, reserved_concurrency=reserved_concurrency)
        return function


def _codetune_layer(
    scope: Construct, *, deps_dir: Path, package_dir: Path, schemas_dir: Path, configs_dir: Path
) -> lambda_.LayerVersion:
    return lambda_.LayerVersion(
        scope,
        "CodetuneLayer",
        description="codetune library, JSON Schemas, training configs, jsonschema, Powertools",
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[lambda_.Architecture.X86_64],
        code=lambda_.Code.from_asset(
            str(package_dir),
            asset_hash_type=AssetHashType.OUTPUT,
            bundling=BundlingOptions(
                # Never pulled: the local bundler always succeeds.
                image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
                local=_CopyLayer(
                    deps_dir=deps_dir,
                    package_dir=package_dir,
                    schemas_dir=schemas_dir,
                    configs_dir=configs_dir,
                ),
            ),
        ),
    )


def _skip_checkov_findings(function: lambda_.Function, *, reserved_concurrency: int | None) -> None:
    checkov_skip(
        function,
        "CKV_AWS_116",
        "Step Functions invokes it synchronously; a DLQ only catches asynchronous "
        "invocations, failures go through the state's Catch to NotifyFailure.",
    )
    checkov_skip(
        function,
        "CKV_AWS_117",
        "It calls only AWS APIs (TLS, IAM-scoped) and reaches no VPC resource; in a VPC "
        "it would need NAT or six interface endpoints.",
    )
    if reserved_concurrency is None:
        checkov_skip(
            function,
            "CKV_AWS_115",
            "Reserved concurrency is per stage (lambdaReservedConcurrency), off by "
            "default: new accounts' limit of 10 leaves nothing to reserve.",
        )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
