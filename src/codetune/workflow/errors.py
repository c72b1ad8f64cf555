"""Typed errors of the workflow glue.

Step Functions sees a Lambda error by its class name (``errorType``), so these names are the
contract with the state machine's ``Retry`` / ``Catch`` clauses (see docs/architecture.md,
"Run input and resolved request"):

- ``RetryableError``: throttling, capacity, endpoint busy — the state machine retries it.
- everything else here is terminal: the Catch routes it to NotifyFailure and Fail.
"""

from __future__ import annotations

from codetune.errors import CodetuneError


class WorkflowError(CodetuneError):
    """Base of every workflow error; terminal unless it is a ``RetryableError``."""


class RetryableError(WorkflowError):
    """A transient AWS condition (throttling, capacity, resource busy): retry with backoff."""


class InvalidRunInput(WorkflowError):
    """The run input violates the contract. ``violations`` lists ``(json_path, message)``."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = list(violations)
        lines = "\n".join(f"  - {path}: {msg}" for path, msg in self.violations)
        n = len(self.violations)
        super().__init__(f"run input has {n} problem{'s' if n != 1 else ''}:\n{lines}")


class InvalidEvent(WorkflowError):
    """A Lambda event (or the handler's environment) is missing a field or has a wrong one."""


class InputNotFound(WorkflowError):
    """An S3 object or prefix that the run needs does not exist."""


class InvalidReport(WorkflowError):
    """The evaluation report cannot be read or does not follow schemas/report.schema.json."""


class AwsRequestFailed(WorkflowError):
    """An AWS call failed for a reason retrying will not fix (access denied, validation...)."""


class DeploymentFailed(WorkflowError):
    """The endpoint went to Failed, or SageMaker rolled the blue/green update back."""


class SmokeTestFailed(WorkflowError):
    """The endpoint answered with a wrong shape, or the base model answered for the adapter."""


# Names the state machine refers to (CDK imports this tuple instead of retyping strings).
TERMINAL_ERRORS = (
    "InvalidRunInput",
    "InvalidEvent",
    "InputNotFound",
    "InvalidReport",
    "AwsRequestFailed",
    "DeploymentFailed",
    "SmokeTestFailed",
)
RETRYABLE_ERRORS = ("RetryableError",)
