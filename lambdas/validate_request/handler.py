"""ValidateRequest: the execution input -> the resolved run request (or InvalidRunInput).

Event ``{"input": <run input>, "executionName": "$$.Execution.Name"}``; environment
ARTIFACT_BUCKET, MODEL_PACKAGE_GROUP, optional ALLOWED_BUCKETS, STAGE, ENDPOINT_NAME,
MAX_TRAINING_SECONDS. Returns
``RunRequest.to_dict()`` (schemas/run-request.schema.json). Logic: codetune.workflow.resolve
(shared with ``codetune run --input`` on AWS).
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError
from codetune.workflow.aws import client
from codetune.workflow.events import ValidateRequestEnv, ValidateRequestEvent
from codetune.workflow.resolve import resolve_run_request

logger = Logger(service="codetune-validate-request")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = ValidateRequestEvent.parse(event)
        logger.set_correlation_id(ev.execution_name)
        env = ValidateRequestEnv.from_environ()
        request = resolve_run_request(
            ev.input, execution_name=ev.execution_name, env=env, s3=client("s3")
        )
    except WorkflowError:
        logger.exception("run input rejected")
        raise
    logger.info({"message": "run input valid", "runId": request.run_id})
    return request.to_dict()
