"""ValidateRequest handler: resolved request out, or a typed error naming what is wrong."""

from __future__ import annotations

import pytest
from lambda_harness import BUCKET, event, load_handler

from codetune.workflow import InputNotFound, InvalidEvent, InvalidRunInput
from codetune.workflow.aws import client
from codetune.workflow.events import validate_against

handler = load_handler("validate_request")


def _put_codebase():
    client("s3").put_object(Bucket=BUCKET, Key="codebases/payments/app.py", Body=b"x = 1\n")


def test_valid_input_returns_resolved_request(aws, fake_planner, context):
    # guards: the success path returns the resolved request with stage-prefixed job names
    _put_codebase()
    out = handler.lambda_handler(event("validate_request"), context)
    validate_against("run-request.schema.json", out, "request")
    assert out["jobs"]["train"] == "test-nightly-payments-2026-11-22-train"
    assert out["training"]["maxWaitSeconds"] == 2 * out["training"]["maxRuntimeSeconds"]


def test_missing_codebase_is_input_not_found(aws, fake_planner, context):
    # guards: S3 inputs are checked for existence before any job starts
    with pytest.raises(InputNotFound, match="data.codebase s3://codetune-artifacts-test/codebases"):
        handler.lambda_handler(event("validate_request"), context)


def test_invalid_input_is_invalid_run_input(aws, fake_planner, context):
    # guards: the execution fails at this state with every violation in the cause
    ev = event("validate_request")
    ev["input"]["training"]["instanceCount"] = 0
    ev["input"]["data"]["codebase"] = "s3://elsewhere/code/"
    with pytest.raises(InvalidRunInput) as e:
        handler.lambda_handler(ev, context)
    assert {p for p, _ in e.value.violations} == {"$.training.instanceCount", "$.data.codebase"}


def test_event_without_execution_name_is_invalid_event(aws, context):
    # guards: a malformed event names the missing field
    ev = event("validate_request")
    del ev["executionName"]
    with pytest.raises(InvalidEvent, match=r"event\.executionName is missing"):
        handler.lambda_handler(ev, context)


def test_missing_environment_is_invalid_event(aws, context, monkeypatch):
    # guards: a stack wiring mistake names the variable
    monkeypatch.delenv("ARTIFACT_BUCKET")
    with pytest.raises(InvalidEvent, match="ARTIFACT_BUCKET"):
        handler.lambda_handler(event("validate_request"), context)
