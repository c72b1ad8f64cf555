"""Fixtures of the image tests: the images built once per session, SageMaker's run request.

Every test here is marked ``images`` (select with ``-m images``) and ``slow``. They skip only
when podman is missing or unusable (it is installed by ``make setup`` as root, so in CI they
run); anything else missing from make setup is an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # harness.py

import harness  # noqa: E402

# What a run input through ValidateRequest becomes on AWS (artifact bucket, S3 codebase):
# the state machine hands the jobs parts of this request verbatim.
RUN_INPUT = {
    "baseModel": "embedded",
    "data": {"codebase": "s3://codetune-artifacts-123456789012/codebases/stdlib/"},
    "prepare": {"config": {"tasks": ["bugfix"], "max_tokens": 256, "max_files": 30}},
    "training": {
        "config": "cpu-smollm2",
        "overrides": {
            "max_steps": 2,
            "max_seq_length": 256,
            "per_device_batch_size": 2,
            "gradient_checkpointing": False,
            "eval_max_examples": 4,
        },
    },
    "evaluation": {"suites": ["humaneval", "bugfix"], "limit": 2},
}


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.images)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def podman():
    reason = harness.unavailable()
    if reason:
        pytest.skip(reason)
    harness.check_setup()


@pytest.fixture(scope="session")
def train_image(podman) -> str:
    return harness.build("train")[0]


@pytest.fixture(scope="session")
def serve_image(podman) -> str:
    return harness.build("serve")[0]


@pytest.fixture(scope="session")
def run_request() -> dict:
    """ValidateRequest's output for RUN_INPUT (camelCase JSON, as the state carries it)."""
    from codetune.workflow import validate_run_input

    request = validate_run_input(
        json.loads(json.dumps(RUN_INPUT)),
        execution_name="image-test",
        artifact_bucket="codetune-artifacts-123456789012",
    )
    return request.to_dict()


def states_json(value) -> str:
    """Step Functions' States.JsonToString: compact JSON."""
    return json.dumps(value, separators=(",", ":"))


@pytest.fixture
def codebase(tmp_path) -> Path:
    """A small real codebase: a few standard-library modules, as S3 would hand them over."""
    import difflib
    import shlex
    import textwrap

    code = harness.sagemaker_dir(tmp_path / "sm" / "code")
    for mod in (textwrap, shlex, difflib):
        (code / Path(mod.__file__).name).write_bytes(Path(mod.__file__).read_bytes())
    return code
