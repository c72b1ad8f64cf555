"""AWS failures become typed errors the state machine can Retry or Catch by name."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError

from codetune.workflow.aws import classify
from codetune.workflow.errors import RETRYABLE_ERRORS, TERMINAL_ERRORS


def _err(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "Op",
    )


def test_throttling_and_capacity_are_retryable():
    # guards: transient conditions go to the Retry clause
    for code in ("ThrottlingException", "InsufficientCapacity", "ServiceUnavailable"):
        assert type(classify(_err(code), "op")).__name__ in RETRYABLE_ERRORS
    assert type(classify(_err("Weird", 503), "op")).__name__ == "RetryableError"
    assert (
        type(classify(EndpointConnectionError(endpoint_url="x"), "op")).__name__ == "RetryableError"
    )


def test_other_errors_are_terminal_and_name_the_operation():
    # guards: access/validation errors are not retried and say which call failed
    e = classify(_err("AccessDeniedException"), "sagemaker:CreateModel")
    assert type(e).__name__ in TERMINAL_ERRORS and "sagemaker:CreateModel" in str(e)
