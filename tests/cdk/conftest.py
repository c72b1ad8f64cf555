"""Synthesize the CDK app once per test session (in-process, cdk-nag on) and share it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # app.py and the cdk/ package live at the repository root
sys.path.insert(0, str(Path(__file__).parent))  # render.py


@dataclass
class Synth:
    template: dict
    outdir: Path
    stack_name: str


def _missing_inputs() -> list[str]:
    needed = [
        "training_image/Dockerfile",
        "inference_image/Dockerfile",
        ".cache/lambda-deps/python/jsonschema",
    ]
    return [p for p in needed if not (REPO / p).exists()]


def synthesize(tmp: Path, context: dict) -> Synth:
    """Run app.py's build() for `context` into `tmp`; cdk-nag findings raise here."""
    import aws_cdk as cdk

    import app as cdk_app

    missing = _missing_inputs()
    if missing:
        # Dockerfiles are written by the training/serving areas, deps by `make lambda-deps`.
        pytest.skip(f"synthesis inputs missing: {missing} (run make setup)")
    application = cdk.App(context=context, outdir=str(tmp))
    stack = cdk_app.build(application, cdk_app.stage_config(application))
    application.synth()
    template = json.loads((tmp / f"{stack.stack_name}.template.json").read_text())
    return Synth(template=template, outdir=tmp, stack_name=stack.stack_name)


def cdk_context(**stage_overrides) -> dict:
    """cdk.json's context, with `stage_overrides` applied to the dev stage."""
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    context["stages"]["dev"].update(stage_overrides)
    return context


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Synth:
    """The dev stage as `make synth` builds it."""
    return synthesize(tmp_path_factory.mktemp("cdk.out"), cdk_context())


@pytest.fixture(scope="session")
def synth_vpc(tmp_path_factory) -> Synth:
    """The dev stage with the optional settings: SageMaker jobs and the endpoint in a VPC,
    reserved Lambda concurrency."""
    return synthesize(
        tmp_path_factory.mktemp("cdk.out.vpc"),
        cdk_context(
            vpcSubnetIds=["subnet-0a1b2c3d"],
            vpcSecurityGroupIds=["sg-0a1b2c3d"],
            lambdaReservedConcurrency=3,
        ),
    )
