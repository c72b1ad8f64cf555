"""The workflow glue: run-input validation and the logic of the Step Functions Lambdas.

Pure functions (AWS clients are parameters) shared by ``lambdas/<name>/handler.py`` and the
local runner. Importable with jsonschema + boto3 + pyyaml only (no torch/transformers) so
the Lambdas can vendor ``src/codetune`` as is.
"""

from codetune.workflow.errors import (
    AwsRequestFailed,
    DeploymentFailed,
    InputNotFound,
    InvalidEvent,
    InvalidReport,
    InvalidRunInput,
    RetryableError,
    SmokeTestFailed,
    WorkflowError,
)
from codetune.workflow.request import RunRequest
from codetune.workflow.validate import validate_run_input

__all__ = [
    "AwsRequestFailed",
    "DeploymentFailed",
    "InputNotFound",
    "InvalidEvent",
    "InvalidReport",
    "InvalidRunInput",
    "RetryableError",
    "RunRequest",
    "SmokeTestFailed",
    "WorkflowError",
    "validate_run_input",
]
