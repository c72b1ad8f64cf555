"""Deterministic names from the Step Functions execution name.

SageMaker names allow ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``; execution names allow up to 80
characters of a wider set. The run id keeps a readable execution name as it is and otherwise
slugs it and appends 8 hex characters of its SHA-256, so two execution names never share a
run id and the same execution name (a redriven or re-validated execution) always gets the
same one. Job names are ``[<stage>-]<runId>-<step>``, at most 59 characters, so the state
machine's per-attempt SageMaker job names ``<name>-r<retry>`` (:func:`attempt_name`; retry
0..9) stay within SageMaker's 63.
"""

from __future__ import annotations

import hashlib
import re

from codetune.workflow.errors import InvalidEvent

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
RUN_ID_MAX = 40
STAGE = re.compile(r"^[a-z0-9]{1,10}$")
JOB_SUFFIXES = {
    "prepare": "prepare",
    "merge": "merge",  # the dataset merge after a multi-instance (sharded) prepare
    "train": "train",
    "evaluate": "eval",
    "model": "model",
    "endpointConfig": "epc",
    "baseModel": "base",  # the SageMaker model of an endpoint's base inference component
}


ATTEMPT_SEPARATOR = "-r"
MAX_RETRIES = 9  # one digit
BASE_NAME_MAX = 63 - len(ATTEMPT_SEPARATOR) - 1


def attempt_name(name: str, retry: int = 0) -> str:
    """The SageMaker name of attempt ``retry`` (0 = first) of job ``name``: what the state
    machine's ``States.Format('{}-r{}', name, $$.State.RetryCount)`` renders."""
    if not 0 <= retry <= MAX_RETRIES:
        raise ValueError(f"retry must be 0..{MAX_RETRIES}, got {retry}")
    return f"{name}{ATTEMPT_SEPARATOR}{retry}"


def run_id(execution_name: str) -> str:
    """The run id of an execution name (<= 40 characters, valid in SageMaker names)."""
    if not isinstance(execution_name, str) or not 1 <= len(execution_name) <= 80:
        raise InvalidEvent(
            f"executionName must be a string of 1..80 characters, got {execution_name!r}"
        )
    if len(execution_name) <= RUN_ID_MAX and SAGEMAKER_NAME.match(execution_name):
        return execution_name
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", execution_name).strip("-")[: RUN_ID_MAX - 9]
    slug = slug.strip("-") or "run"
    digest = hashlib.sha256(execution_name.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


CLIENT_TOKEN_MAX = 36  # CreateModelPackage.ClientToken: [a-zA-Z0-9-]+, at most 36


def client_token(rid: str) -> str:
    """An idempotency token of the run for CreateModelPackage (``[a-zA-Z0-9-]{1,36}``).

    A run id of up to 36 characters is the token; a longer one keeps its first 27 and adds
    8 hex characters of its SHA-256, so two run ids never share a token.
    """
    if len(rid) <= CLIENT_TOKEN_MAX:
        return rid
    digest = hashlib.sha256(rid.encode("utf-8")).hexdigest()[:8]
    return f"{rid[: CLIENT_TOKEN_MAX - 9].rstrip('-')}-{digest}"


def job_names(rid: str, stage: str | None = None) -> dict[str, str]:
    """SageMaker resource names of one run, keyed like the resolved request's ``jobs``."""
    if stage is not None and not STAGE.match(stage):
        raise InvalidEvent(f"stage must be 1..10 lowercase letters or digits, got {stage!r}")
    prefix = f"{stage}-{rid}" if stage else rid
    names = {key: f"{prefix}-{suffix}" for key, suffix in JOB_SUFFIXES.items()}
    for name in names.values():
        # guaranteed by run_id's alphabet and length (and room for the attempt suffix)
        assert SAGEMAKER_NAME.match(name) and len(name) <= BASE_NAME_MAX, name
    return names


# CreateInferenceComponent.InferenceComponentName (botocore's model): no dots or underscores,
# which adapter names may have, and at most 63 characters, which <endpoint>-<adapter> may pass.
COMPONENT_NAME = re.compile(r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$")
COMPONENT_NAME_MAX = 63
BASE_COMPONENT_SUFFIX = "base"


def component_name(endpoint: str, suffix: str) -> str:
    """The inference component name ``<endpoint>-<suffix>``, made valid deterministically.

    Kept as it is when it is valid; otherwise (``.``/``_`` in ``suffix``, or longer than 63)
    every other character becomes ``-``, the result is cut to 54 characters and 8 hex
    characters of the SHA-256 of ``endpoint/suffix`` are appended, so two suffixes never
    share a name and the same suffix always gets the same one.
    """
    name = f"{endpoint}-{suffix}"
    if len(name) <= COMPONENT_NAME_MAX and COMPONENT_NAME.match(name):
        return name
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", name).strip("-")
    digest = hashlib.sha256(f"{endpoint}/{suffix}".encode()).hexdigest()[:8]
    return f"{slug[: COMPONENT_NAME_MAX - 9].rstrip('-')}-{digest}"


def component_names(endpoint: str, adapter: str) -> tuple[str, str]:
    """(base component, adapter component) of ``adapter`` on ``endpoint``."""
    return component_name(endpoint, BASE_COMPONENT_SUFFIX), component_name(endpoint, adapter)
