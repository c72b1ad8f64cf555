"""ValidateRequest: the execution input -> the resolved run request (or InvalidRunInput).

Event ``{"input": <run input>, "executionName": "$$.Execution.Name"}``; environment
ARTIFACT_BUCKET, MODEL_PACKAGE_GROUP, optional ALLOWED_BUCKETS, STAGE, ENDPOINT_NAME,
MAX_TRAINING_SECONDS. Returns
``RunRequest.to_dict()`` (schemas/run-request.schema.json). Logic: codetune.workflow.validate.
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError, validate_run_input
from codetune.workflow.aws import client
from codetune.workflow.events import ValidateRequestEnv, ValidateRequestEvent
from codetune.workflow.storage import (
    check_inputs_exist,
    codebase_fingerprint,
    reuse_prepared_dataset,
)

logger = Logger(service="codetune-validate-request")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = ValidateRequestEvent.parse(event)
        logger.set_correlation_id(ev.execution_name)
        env = ValidateRequestEnv.from_environ()
        s3 = client("s3")
        request = validate_run_input(
            ev.input,
            execution_name=ev.execution_name,
            artifact_bucket=env.artifact_bucket,
            allowed_buckets=env.allowed_buckets,
            model_package_group=env.model_package_group,
            stage=env.stage,
            codebase_fingerprint=lambda uri: codebase_fingerprint(uri, s3),
            endpoint_name=env.endpoint_name,
            max_training_seconds=env.max_training_seconds,
        )
        check_inputs_exist(request, s3)
        # Step caching: the same codebase contents + prepare config -> the same dataset.
        request = reuse_prepared_dataset(request, s3)
    except WorkflowError:
        logger.exception("run input rejected")
        raise
    logger.info({"message": "run input valid", "runId": request.run_id})
    return request.to_dict()
