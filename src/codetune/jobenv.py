"""Settings a SageMaker Processing job receives as environment variables.

The state machine (``cdk/constructs/workflow.py``) passes the prepare and evaluate jobs their
configs as ``--set key=value`` container arguments (ValidateRequest renders them) and the
run's identity in these variables; the CLIs read them as defaults, and command-line flags
always win. A test keeps the names in the CDK app and here identical.
"""

from __future__ import annotations

import json
import os
from typing import Any

from codetune.errors import CodetuneError

RUN_ID = "CODETUNE_RUN_ID"
BASE_MODEL = "CODETUNE_BASE_MODEL"  # "embedded", a Hugging Face id, or s3:// (then: model channel)
PREPARE_CONFIG = "CODETUNE_PREPARE_CONFIG"  # JSON object of dotted prepare overrides
ADAPTER_URI = "CODETUNE_ADAPTER_URI"  # informational: where the adapter came from
# comma list of sandbox layers evaluate must have, e.g. "seccomp" (codetune.evaluate.sandbox)
SANDBOX_REQUIRE = "CODETUNE_SANDBOX_REQUIRE"
ALL = (
    RUN_ID,
    BASE_MODEL,
    PREPARE_CONFIG,
    ADAPTER_URI,
    SANDBOX_REQUIRE,
)


def json_env(name: str) -> Any:
    """The JSON value of variable ``name`` (None when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CodetuneError(
            f"environment variable {name} is not valid JSON ({e.msg}): {raw[:80]!r}"
        ) from e


def overrides_env(name: str) -> list[str]:
    """A JSON object of dotted overrides in ``name`` as ``--set key=value`` strings."""
    value = json_env(name)
    if value is None:
        return []
    if not isinstance(value, dict):
        raise CodetuneError(f"environment variable {name} must hold a JSON object of overrides")
    return [f"{k}={json.dumps(v)}" for k, v in sorted(value.items())]


def prepare_environment(request) -> dict[str, str]:
    """The PrepareDataset/MergeDataset jobs' environment as the state machine sets it from a
    RunRequest (their config arrives as container arguments: ``request.prepare.arguments``)."""
    return {RUN_ID: request.run_id}


def evaluate_environment(request, adapter_uri: str) -> dict[str, str]:
    """The EvaluateAdapter job's environment as the state machine sets it from a RunRequest
    and the trained adapter's URI (``$.training.modelDataUrl``); its settings travel as
    ContainerArguments (``request.evaluation.arguments``). The stack adds its own
    sandbox minimum, ``SANDBOX_REQUIRE``; a test keeps both in step."""
    return {
        RUN_ID: request.run_id,
        BASE_MODEL: request.base_model.id,
        ADAPTER_URI: adapter_uri,
    }
