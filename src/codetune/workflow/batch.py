"""The batch inference workflow's input -> its resolved request (ValidateBatch's logic).

Batch input (the execution input of the stack's batch state machine)::

    {"modelPackageArn": "arn:aws:sagemaker:<region>:<account>:model-package/<group>/<n>",
     "input": "s3://<artifact bucket>/batch/<anything>",   # a JSONL object or a prefix of them
     "adapter": "name",            # optional: the job's adapter for lines that name none
     "instanceType": "ml.g5.xlarge", "instanceCount": 1,
     "maxConcurrentTransforms": 0, # 0 = what the container's /execution-parameters asks
     "invocationTimeoutSeconds": 600}

Each input line is one ``/invocations`` body (``codetune batch``'s format); the answers land
in ``s3://<artifact bucket>/batch/<batchId>/output/<input file name>.out``, line for line.
:func:`resolve_batch_request` checks everything SageMaker would refuse or the batch role could
not read, and returns the names and settings the state machine's CreateModel and
CreateTransformJob states take (``cdk/constructs/batch.py``).
"""

from __future__ import annotations

import re
from typing import Any

from codetune.workflow.deploy import supports_kms_volume
from codetune.workflow.errors import InvalidRunInput
from codetune.workflow.naming import SAGEMAKER_NAME, job_names, run_id
from codetune.workflow.registry import ENV_INSTANCE_TYPE

BATCH_PREFIX = "batch/"  # where batch inputs and outputs live in the artifact bucket
DEFAULTS: dict[str, Any] = {
    "adapter": None,
    "instanceType": "ml.g5.xlarge",
    "instanceCount": 1,
    "maxConcurrentTransforms": 0,
    "invocationTimeoutSeconds": 600,
}
FIELDS = {"modelPackageArn", "input", *DEFAULTS}
ADAPTER = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")  # the run input's adapterName
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.*)$")
MAX_PAYLOAD_MB = 1  # the server's default max_body_bytes (1 MiB): larger records are 413
MAX_INVOCATION_TIMEOUT = 3600  # ModelClientConfig.InvocationsTimeoutInSeconds: 1..3600
ENV_DEFAULT_MODEL = "CODETUNE_DEFAULT_MODEL"  # codetune.serve.config.ENV_DEFAULT_MODEL


def _int(doc: dict, key: str, lo: int, hi: int, out: list) -> int | None:
    v = doc[key]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        out.append((f"$.{key}", f"must be an integer in {lo}..{hi}, got {v!r}"))
        return None
    return v


def resolve_batch_request(
    doc: Any,
    *,
    execution_name: str,
    artifact_bucket: str,
    model_package_group: str,
    stage: str | None = None,
) -> dict:
    """The resolved batch request; raises InvalidRunInput listing every violation
    (``(json_path, message)``), each saying what is allowed."""
    if not isinstance(doc, dict):
        raise InvalidRunInput([("$", f"must be a JSON object, got {type(doc).__name__}")])
    out: list[tuple[str, str]] = []
    for key in sorted(set(doc) - FIELDS):
        out.append((f"$.{key}", f"unknown field; known: {', '.join(sorted(FIELDS))}"))
    for key in ("modelPackageArn", "input"):
        if not isinstance(doc.get(key), str):
            out.append((f"$.{key}", "required: a string"))
    doc = {**DEFAULTS, **{k: v for k, v in doc.items() if v is not None or k == "adapter"}}

    package = doc.get("modelPackageArn")
    if isinstance(package, str):
        pattern = rf"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{{12}}:model-package/{re.escape(model_package_group)}/\d+$"
        if not re.match(pattern, package):
            out.append(
                (
                    "$.modelPackageArn",
                    f"must be a version of the stack's package group {model_package_group!r} "
                    "(arn:aws:sagemaker:<region>:<account>:model-package/"
                    f"{model_package_group}/<n>: the modelPackageArn a training run outputs), "
                    f"got {package!r}",
                )
            )
    source = doc.get("input")
    if isinstance(source, str):
        m = S3_URI.match(source)
        if not m or m.group(1) != artifact_bucket or not m.group(2).startswith(BATCH_PREFIX):
            out.append(
                (
                    "$.input",
                    f"must be under s3://{artifact_bucket}/{BATCH_PREFIX} (the only prefix "
                    f"the batch role reads), got {source!r}",
                )
            )
        elif "/output/" in m.group(2):
            out.append(("$.input", "must not be under an output/ prefix of batch/"))
    adapter = doc["adapter"]
    if adapter is not None and (not isinstance(adapter, str) or not ADAPTER.match(adapter)):
        out.append(("$.adapter", f"must match {ADAPTER.pattern} or be null, got {adapter!r}"))
    itype = doc["instanceType"]
    if not isinstance(itype, str) or not INSTANCE_TYPE.match(itype):
        out.append(("$.instanceType", f"must be a SageMaker instance type (ml.*), got {itype!r}"))
    count = _int(doc, "instanceCount", 1, 100, out)
    concurrency = _int(doc, "maxConcurrentTransforms", 0, 1024, out)
    timeout = _int(doc, "invocationTimeoutSeconds", 1, MAX_INVOCATION_TIMEOUT, out)
    if out:
        raise InvalidRunInput(out)

    rid = run_id(execution_name)
    names = job_names(rid, stage)
    batch_name = names["model"].removesuffix("-model")
    job, model = f"{batch_name}-batch", f"{batch_name}-bmodel"
    assert SAGEMAKER_NAME.match(job) and SAGEMAKER_NAME.match(model), (job, model)
    return {
        "batchId": rid,
        "jobName": job,
        "modelName": model,
        "modelPackageArn": package,
        "input": source,
        "output": f"s3://{artifact_bucket}/{BATCH_PREFIX}{rid}/output/",
        # The package's container names the endpoint's instance type (the vLLM engine sizes
        # itself by it); the batch runs on its own.
        "environment": {
            ENV_INSTANCE_TYPE: itype,
            **({ENV_DEFAULT_MODEL: adapter} if adapter else {}),
        },
        "instanceType": itype,
        "instanceCount": count,
        "volumeKmsKey": supports_kms_volume(itype),
        "maxConcurrentTransforms": concurrency,
        "maxPayloadInMB": MAX_PAYLOAD_MB,
        "invocationTimeoutSeconds": timeout,
    }
