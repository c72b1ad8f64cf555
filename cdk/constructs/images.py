"""Container images for the SageMaker jobs and the endpoint, built from this repository.

Synthesis only stages the build context into cdk.out (no Docker engine needed); `cdk deploy`
builds and pushes to the bootstrap ECR repository.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

# The build context is the repository root (both images `pip install` src/codetune), so
# everything that is not image input is excluded: otherwise a test, doc or Lambda edit
# would change the image hash and rebuild multi-GB images for nothing.
COMMON_EXCLUDES = (
    ".git",
    ".venv",
    ".cache",
    "**/__pycache__",
    "**/*.pyc",
    "*.egg-info",
    "src/*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "node_modules",
    "cdk.out",
    "cdk",
    "app.py",
    "cdk.json",
    "tests",
    "lambdas",
    "docs",
    "benchmarks",
    "examples",
    "runs",
    "out",
)


class ContainerImages(Construct):
    """The training image (prepare/train/evaluate) and the inference image, as image assets."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        context_dir: Path,
        training_dockerfile: str,
        inference_dockerfile: str,
    ) -> None:
        super().__init__(scope, construct_id)
        for dockerfile in (training_dockerfile, inference_dockerfile):
            if not (context_dir / dockerfile).is_file():
                raise FileNotFoundError(
                    f"{context_dir / dockerfile} is missing; the image cannot be staged"
                )
        self.training_image = ecr_assets.DockerImageAsset(
            self,
            "TrainingImage",
            directory=str(context_dir),
            file=training_dockerfile,
            exclude=[*COMMON_EXCLUDES, "inference_image"],
            ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        self.inference_image = ecr_assets.DockerImageAsset(
            self,
            "InferenceImage",
            directory=str(context_dir),
            file=inference_dockerfile,
            exclude=[*COMMON_EXCLUDES, "training_image"],
            ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        # Both assets land in the CDK bootstrap repository; roles get pull rights on it only.
        self.repositories: list[ecr.IRepository] = [
            self.training_image.repository,
            self.inference_image.repository,
        ]


class RegistryScanOnPush(Construct):
    """Basic scan-on-push for the CDK bootstrap's container-asset repositories.

    DockerImageAsset pushes into the bootstrap repository, whose template does not turn
    scanning on, and its settings are not ours to change. ECR's registry scanning
    configuration can: a rule with a wildcard repository filter. It is account-and-region
    wide (one per registry, replacing an existing one), hence `enabled` in the stage config.
    """

    def __init__(self, scope: Construct, construct_id: str, *, repository_filter: str) -> None:
        super().__init__(scope, construct_id)
        self.configuration = ecr.CfnRegistryScanningConfiguration(
            self,
            "Configuration",
            scan_type="BASIC",
            rules=[
                ecr.CfnRegistryScanningConfiguration.ScanningRuleProperty(
                    scan_frequency="SCAN_ON_PUSH",
                    repository_filters=[
                        ecr.CfnRegistryScanningConfiguration.RepositoryFilterProperty(
                            filter=repository_filter, filter_type="WILDCARD"
                        )
                    ],
                )
            ],
        )
