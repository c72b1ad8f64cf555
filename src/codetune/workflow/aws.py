"""Turning AWS client failures into the workflow's typed errors.

Throttling and capacity errors become ``RetryableError`` (the state machine retries them);
every other failure becomes ``AwsRequestFailed`` with the operation and AWS's message. No
AWS error is swallowed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import boto3
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from codetune.workflow.errors import AwsRequestFailed, RetryableError

RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "InsufficientCapacity",
        "InsufficientInstanceCapacity",
        "CapacityError",
        "ConcurrentUpdateException",
        "ConcurrentModificationException",
        "ModelNotReadyException",
    }
)


@functools.cache
def client(service: str):
    """One boto3 client per service per process: Lambda reuses it across invocations
    (creating a client costs ~0.3 s of model loading)."""
    return boto3.client(service)


def reset_clients() -> None:
    """Forget the cached clients, so the next ``client()`` reads region and credentials anew.

    A Lambda process never needs this; a process that switches AWS accounts or regions
    (a test session mocking AWS per test) must call it, or clients made for one region keep
    answering in the next.
    """
    client.cache_clear()


def error_code(e: ClientError) -> str:
    """The AWS error code of a ClientError ('' when absent)."""
    return str(e.response.get("Error", {}).get("Code", ""))


def is_not_found(e: ClientError) -> bool:
    """True when a describe call failed because the resource does not exist.

    SageMaker answers a missing model/endpoint with ``ValidationException`` "Could not find";
    S3 with 404/NoSuchKey.
    """
    code = error_code(e)
    msg = str(e.response.get("Error", {}).get("Message", ""))
    return (
        code in {"NoSuchKey", "404", "NotFound", "ResourceNotFound", "ResourceNotFoundException"}
        or (
            code in {"ValidationException", "ValidationError"}
            and ("Could not find" in msg or "does not exist" in msg)
        )
        or (code == "ObjectNotFoundException")
    )


def classify(e: Exception, operation: str) -> Exception:
    """The typed workflow error for an AWS failure ``e`` raised by ``operation``."""
    if isinstance(e, ClientError):
        code = error_code(e)
        msg = e.response.get("Error", {}).get("Message", str(e))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in RETRYABLE_CODES or status >= 500 or status == 429:
            return RetryableError(f"{operation}: {code} ({msg}); transient, retry")
        return AwsRequestFailed(f"{operation}: {code}: {msg}")
    if isinstance(e, EndpointConnectionError | ReadTimeoutError | ConnectionClosedError):
        return RetryableError(f"{operation}: {type(e).__name__} ({e}); transient, retry")
    return e


@contextmanager
def aws_call(operation: str) -> Iterator[None]:
    """Context manager: re-raise AWS failures inside it as typed workflow errors."""
    try:
        yield
    except (ClientError, EndpointConnectionError, ReadTimeoutError, ConnectionClosedError) as e:
        raise classify(e, operation) from e


def call(operation: str, fn: Callable, **kwargs):
    """Call ``fn(**kwargs)``; AWS failures become typed workflow errors naming ``operation``."""
    with aws_call(operation):
        return fn(**kwargs)
