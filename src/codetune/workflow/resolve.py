"""What ValidateRequest does with one execution input, for the Lambda and ``codetune run``.

The Lambda calls :func:`resolve_run_request` with its environment; ``codetune run --input``
(on AWS) calls it with the same function's environment read from the deployed stack, so a
run input the Lambda would refuse is refused before the execution starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from codetune.workflow.events import ValidateRequestEnv
from codetune.workflow.request import RunRequest
from codetune.workflow.storage import (
    check_inputs_exist,
    codebase_fingerprint,
    reuse_prepared_dataset,
)
from codetune.workflow.validate import validate_run_input


def resolve_run_request(
    doc: Any, *, execution_name: str, env: ValidateRequestEnv, s3
) -> RunRequest:
    """Validate ``doc`` as the stack's ValidateRequest does and resolve it into the request.

    Every field of ``env`` is the keyword of :func:`validate_run_input` of the same name.
    Returns the ``RunRequest`` (with ``data.skipPrepare`` set when the dataset is already
    prepared); raises ``InvalidRunInput`` (every violation) or ``InputNotFound`` (missing S3
    inputs).
    """
    request = validate_run_input(
        doc,
        execution_name=execution_name,
        codebase_fingerprint=lambda uri: codebase_fingerprint(uri, s3),
        **{f.name: getattr(env, f.name) for f in dataclasses.fields(env)},
    )
    check_inputs_exist(request, s3)
    # Step caching: the same codebase contents + prepare config -> the same dataset.
    return reuse_prepared_dataset(request, s3)
