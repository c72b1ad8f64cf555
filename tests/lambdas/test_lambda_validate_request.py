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


def test_prepared_dataset_is_reused_until_the_codebase_changes(aws, fake_planner, context):
    # guards: step caching: a second run over the same codebase contents and prepare config
    # skips PrepareDataset and trains on datasets/<prepareCacheKey>/; changed code does not
    _put_codebase()
    first = handler.lambda_handler(event("validate_request"), context)
    assert first["paths"]["dataset"].startswith(f"s3://{BUCKET}/datasets/")
    assert first["paths"]["checkpoints"].startswith(f"s3://{BUCKET}/checkpoints/")
    assert first["data"]["skipPrepare"] is False
    # PrepareDataset's output lands there (manifest.json last: the job's marker of success)
    key = first["paths"]["dataset"].removeprefix(f"s3://{BUCKET}/") + "manifest.json"
    client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"{}")
    ev = event("validate_request")
    ev["executionName"] = "nightly-payments-2026-11-23"
    second = handler.lambda_handler(ev, context)
    assert second["runId"] != first["runId"]
    assert second["data"]["skipPrepare"] is True
    assert second["paths"]["dataset"] == first["paths"]["dataset"]
    client("s3").put_object(Bucket=BUCKET, Key="codebases/payments/app.py", Body=b"x = 2\n")
    third = handler.lambda_handler(ev, context)
    assert third["data"]["skipPrepare"] is False
    assert third["paths"]["dataset"] != first["paths"]["dataset"]


def test_endpoint_other_than_the_stacks_is_refused(aws, fake_planner, context, monkeypatch):
    # guards: with ENDPOINT_NAME set (the stack does), another deployment.endpointName fails
    # naming the allowed one: the stack's rollback alarms watch only that endpoint
    _put_codebase()
    monkeypatch.setenv("ENDPOINT_NAME", "codetune")
    with pytest.raises(InvalidRunInput, match="allowed: 'codetune'") as e:
        handler.lambda_handler(event("validate_request"), context)  # asks for codetune-test
    assert [p for p, _ in e.value.violations] == ["$.deployment.endpointName"]
    monkeypatch.setenv("ENDPOINT_NAME", "codetune-test")
    assert (
        handler.lambda_handler(event("validate_request"), context)["deployment"]["endpointName"]
        == "codetune-test"
    )
