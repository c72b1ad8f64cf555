"""SmokeTest: the fixed prompt through base and adapter; fails on a base-model fallback.

Event ``{"request"}``. Returns ``{"endpointName", "adapterName", "baseModel", "adapterModel",
"adapterSample"}``. Logic: codetune.workflow.smoke.
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError
from codetune.workflow.aws import client
from codetune.workflow.events import SmokeTestEvent
from codetune.workflow.smoke import smoke_test

logger = Logger(service="codetune-smoke-test")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = SmokeTestEvent.parse(event)
        logger.set_correlation_id(ev.request.execution_name)
        result = smoke_test(ev.request, client("sagemaker-runtime"))
    except WorkflowError:
        logger.exception("smoke test failed")
        raise
    logger.info({"message": "smoke test passed", **result})
    return result
