"""QualityGate: report.json + the input's thresholds -> {"passed", "reasons", ...}.

Event ``{"request": <resolved request>, "reportUri": optional}``. The state machine's Choice
branches on ``passed``. Logic: codetune.workflow.quality (decide() from codetune.evaluate.gate).
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError
from codetune.workflow.aws import client
from codetune.workflow.events import QualityGateEvent
from codetune.workflow.quality import run_quality_gate

logger = Logger(service="codetune-quality-gate")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = QualityGateEvent.parse(event)
        logger.set_correlation_id(ev.request.execution_name)
        result = run_quality_gate(ev.request, ev.report_uri, client("s3"))
    except WorkflowError:
        logger.exception("quality gate could not decide")
        raise
    logger.info(
        {"message": "gate decided", "passed": result["passed"], "reasons": result["reasons"]}
    )
    return result
