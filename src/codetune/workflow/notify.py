"""NotifyFailure: a readable failure message on the stack's SNS topic."""

from __future__ import annotations

import json

from codetune.workflow.aws import call


def execution_link(execution_arn: str | None) -> str | None:
    """The Step Functions console URL of an execution (None without an ARN)."""
    if not execution_arn:
        return None
    region = execution_arn.split(":")[3]
    return (
        f"https://{region}.console.aws.amazon.com/states/home?region={region}"
        f"#/v2/executions/details/{execution_arn}"
    )


def readable_cause(cause: str) -> str:
    """A Lambda failure's Cause is JSON ({errorType, errorMessage, trace}); keep the message."""
    try:
        doc = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(doc, dict) and "errorMessage" in doc:
        return str(doc["errorMessage"])
    return cause


def failure_message(event) -> tuple[str, str]:
    """(subject <= 100 chars, body) for a failed execution."""
    subject = f"codetune run {event.execution_name} failed at {event.state}: {event.error}"
    lines = [
        f"codetune run {event.execution_name} failed.",
        "",
        f"State: {event.state}",
        f"Error: {event.error}",
        f"Cause: {readable_cause(event.cause) or '(none given)'}",
    ]
    link = execution_link(event.execution_arn)
    if link:
        lines += ["", f"Execution: {link}"]
    return subject[:100], "\n".join(lines)


def notify_failure(event, *, topic_arn: str, sns) -> dict:
    """Publish the failure message; returns ``{"messageId", "subject"}``."""
    subject, body = failure_message(event)
    resp = call("sns:Publish", sns.publish, TopicArn=topic_arn, Subject=subject, Message=body)
    return {"messageId": resp["MessageId"], "subject": subject}
