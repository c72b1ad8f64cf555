#!/usr/bin/env python3
"""CDK entry point: cdk.json context -> StageConfig -> CodetuneStack -> cdk-nag.

Run it (no Docker, no credentials, no network needed to synthesize)::

    make synth                                   # .venv/bin/python app.py -> cdk.out/
    .venv/bin/python app.py -c stage=prod        # another stage from cdk.json
    .cache/node/node_modules/.bin/cdk synth -c stage=prod
    .cache/node/node_modules/.bin/cdk deploy -c stage=prod
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # `cdk` package next to this file, whatever the cwd

from cdk.config import StageConfig, load_stage  # noqa: E402
from cdk.stack import CodetuneStack  # noqa: E402


def stage_config(app: cdk.App) -> StageConfig:
    """Read the stage (`-c stage=NAME`, default from cdk.json) once, into a frozen dataclass."""
    stage = app.node.try_get_context("stage") or "dev"
    return load_stage({"stages": app.node.try_get_context("stages")}, stage)


def build(app: cdk.App, config: StageConfig) -> CodetuneStack:
    """Create the stack for `config` and turn cdk-nag's AwsSolutions checks on for the app."""
    env = None
    if config.account or config.region:
        env = cdk.Environment(account=config.account, region=config.region)
    stack = CodetuneStack(
        app,
        f"Codetune{config.stage.capitalize()}Stack",
        config=config,
        env=env,
        description="codetune: QLoRA fine-tuning, evaluation and serving of a code LLM",
    )
    cdk.Tags.of(stack).add("project", "codetune")
    cdk.Tags.of(stack).add("stage", config.stage)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def cdk_json_context(argv: list[str]) -> dict:
    """cdk.json's context plus `-c key=value` pairs from argv.

    The CDK CLI passes cdk.json context itself (CDK_CONTEXT_JSON, which wins over these);
    reading it here makes `python app.py -c stage=prod` work without the CLI.
    """
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-c", "--context") and "=" in value:
            key, _, val = value.partition("=")
            context[key] = val
    return context


def main() -> None:
    # The CLI sets CDK_OUTDIR; run directly (make synth), write next to this file.
    app = cdk.App(
        context=cdk_json_context(sys.argv),
        outdir=os.environ.get("CDK_OUTDIR", str(REPO / "cdk.out")),
    )
    build(app, stage_config(app))
    app.synth()


if __name__ == "__main__":
    main()
