"""RegisterAdapter: a Model Registry package for the run (idempotent per runId).

Event ``{"request", "gate": <QualityGate output>, "modelDataUrl": optional, "training": optional
(the training task's result)}``; environment
INFERENCE_IMAGE_URI, IMAGE_GIT_REVISION. Returns ``{"modelPackageArn", "approvalStatus",
"deploy", "created"}``. Logic: codetune.workflow.registry.
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError
from codetune.workflow.aws import client
from codetune.workflow.events import RegisterAdapterEnv, RegisterAdapterEvent
from codetune.workflow.registry import register_adapter

logger = Logger(service="codetune-register-adapter")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = RegisterAdapterEvent.parse(event)
        logger.set_correlation_id(ev.request.execution_name)
        env = RegisterAdapterEnv.from_environ()
        result = register_adapter(
            ev.request,
            gate=ev.gate,
            model_data_url=ev.model_data_url,
            training=ev.training,
            inference_image_uri=env.inference_image_uri,
            image_git_revision=env.image_git_revision,
            sagemaker=client("sagemaker"),
            s3=client("s3"),
            ecr=client("ecr"),
        )
    except WorkflowError:
        logger.exception("registration failed")
        raise
    logger.info({"message": "adapter registered", **result})
    return result
