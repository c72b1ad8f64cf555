"""NotifyFailure: publish a readable failure message (state, error, cause, link) to SNS.

Event ``{"executionArn", "executionName", "state", "error": {"Error", "Cause"}}`` (what the
Catch clauses pass); environment TOPIC_ARN. Logic: codetune.workflow.notify.
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError
from codetune.workflow.aws import client
from codetune.workflow.events import NotifyFailureEnv, NotifyFailureEvent
from codetune.workflow.notify import notify_failure

logger = Logger(service="codetune-notify-failure")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = NotifyFailureEvent.parse(event)
        logger.set_correlation_id(ev.execution_name)
        result = notify_failure(
            ev, topic_arn=NotifyFailureEnv.from_environ().topic_arn, sns=client("sns")
        )
    except WorkflowError:
        logger.exception("could not publish the failure")
        raise
    logger.info({"message": "failure published", **result})
    return result
