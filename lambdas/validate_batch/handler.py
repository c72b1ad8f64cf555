"""ValidateBatch: the batch state machine's input -> its resolved request (or InvalidRunInput).

Event ``{"input": <batch input>, "executionName": "$$.Execution.Name"}``; environment
ARTIFACT_BUCKET, MODEL_PACKAGE_GROUP, optional STAGE. Returns the resolved batch request
(names, S3 locations, transform settings). Logic: codetune.workflow.batch (pure: no AWS call).
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError
from codetune.workflow.batch import resolve_batch_request
from codetune.workflow.events import ValidateRequestEnv, ValidateRequestEvent

logger = Logger(service="codetune-validate-batch")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = ValidateRequestEvent.parse(event)
        logger.set_correlation_id(ev.execution_name)
        env = ValidateRequestEnv.from_environ()
        request = resolve_batch_request(
            ev.input,
            execution_name=ev.execution_name,
            artifact_bucket=env.artifact_bucket,
            model_package_group=env.model_package_group,
            stage=env.stage,
        )
    except WorkflowError:
        logger.exception("batch input rejected")
        raise
    logger.info({"message": "batch input valid", "jobName": request["jobName"]})
    return request
