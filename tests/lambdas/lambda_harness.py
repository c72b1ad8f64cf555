"""Lambda test harness (helpers; fixtures in conftest.py): moto-backed AWS, the handlers loaded by path, JSON event fixtures.

Every ``lambdas/<name>/handler.py`` is called the way Lambda calls it: ``lambda_handler(event,
context)`` with an event read from ``tests/lambdas/events/<name>.json`` plus the resolved run
request produced by the real ``validate_run_input``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

EVENTS = Path(__file__).parent / "events"
REPO = Path(__file__).resolve().parents[2]
BUCKET = "codetune-artifacts-test"
REGION = "us-east-1"
ACCOUNT = "123456789012"
PLANNED = "ml.g5.2xlarge"

# Set per test (the `lambda_env` fixture), never at import: other test directories in the
# same session use other regions and accounts.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "POWERTOOLS_SERVICE_NAME": "codetune-test",
}


@dataclass
class LambdaContext:
    function_name: str = "codetune-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:codetune-test"
    aws_request_id: str = "req-1"


def event(name: str) -> dict:
    """A copy of the event fixture ``events/<name>.json``."""
    return json.loads((EVENTS / f"{name}.json").read_text())


def load_handler(name: str):
    """Import lambdas/<name>/handler.py as its own module (every file is called handler.py)."""
    spec = importlib.util.spec_from_file_location(
        f"lambda_{name}", REPO / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def context():
    return LambdaContext()


@pytest.fixture
def fake_planner(monkeypatch):
    """Deterministic planner stand-in (the real one has its own tests)."""
    monkeypatch.setattr("codetune.plan.recommend_instance", lambda *a: PLANNED)
    monkeypatch.setattr("codetune.plan.check_instance", lambda *a: None)


@pytest.fixture(autouse=True)
def lambda_env(monkeypatch):
    """This directory's region and fake credentials, and no AWS client cached by an earlier
    test (codetune.workflow.aws.client caches one per service, region fixed at creation)."""
    from codetune.workflow.aws import reset_clients

    for name in ("AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    reset_clients()
    yield
    reset_clients()


@contextmanager
def moto_account(monkeypatch):
    """A fresh moto account with the stack's artifact bucket and model package group.

    The handlers' cached clients are dropped on entry and exit: a client made before (for
    another region, or outside moto) must not answer inside, nor one made inside after.
    """
    from moto import mock_aws

    from codetune.workflow.aws import client, reset_clients

    reset_clients()
    try:
        with mock_aws():
            client("s3").create_bucket(Bucket=BUCKET)
            client("sagemaker").create_model_package_group(ModelPackageGroupName="codetune-test")
            monkeypatch.setenv("ARTIFACT_BUCKET", BUCKET)
            monkeypatch.setenv("MODEL_PACKAGE_GROUP", "codetune-test")
            monkeypatch.setenv("STAGE", "test")
            yield
    finally:
        reset_clients()


@pytest.fixture
def aws(monkeypatch):
    """A fresh moto account (moto_account) for one test."""
    with moto_account(monkeypatch):
        yield


@pytest.fixture
def request_doc(fake_planner):
    """The resolved request for events/validate_request.json (as ValidateRequest returns it)."""
    from codetune.workflow import validate_run_input

    ev = event("validate_request")
    return validate_run_input(
        ev["input"],
        execution_name=ev["executionName"],
        artifact_bucket=BUCKET,
        model_package_group="codetune-test",
        stage="test",
    ).to_dict()


def with_request(name: str, request_doc: dict) -> dict:
    ev = event(name)
    ev["request"] = copy.deepcopy(request_doc)
    return ev


def put_json(uri: str, doc) -> None:
    from codetune.workflow.aws import client

    bucket, key = uri.removeprefix("s3://").split("/", 1)
    client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())
