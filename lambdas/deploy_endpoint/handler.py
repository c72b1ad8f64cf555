"""DeployEndpoint: one step towards this run's adapter being served (inference components,
or a single-model endpoint with deployment.mode single-model).

Event ``{"request", "registration": {"modelPackageArn"}, "previous": optional (this state's
last output), "rollbackAlarms": optional}``; environment SAGEMAKER_ROLE_ARN, optional
KMS_KEY_ID, ROLLBACK_ALARMS, VPC_SUBNET_IDS, VPC_SECURITY_GROUP_IDS. Returns ``{"endpointName", "endpointConfigName", "action",
"status", "autoscaling"}`` (components mode adds "baseComponent", "adapterComponent"); the state machine waits and calls again until status is
InService. Logic: codetune.workflow.deploy.
"""

from aws_lambda_powertools import Logger

from codetune.workflow import WorkflowError
from codetune.workflow.aws import client
from codetune.workflow.deploy import deploy_endpoint
from codetune.workflow.events import DeployEndpointEnv, DeployEndpointEvent

logger = Logger(service="codetune-deploy-endpoint")


@logger.inject_lambda_context
def lambda_handler(event, context):
    try:
        ev = DeployEndpointEvent.parse(event)
        logger.set_correlation_id(ev.request.execution_name)
        env = DeployEndpointEnv.from_environ()
        result = deploy_endpoint(
            ev.request,
            model_package_arn=ev.model_package_arn,
            role_arn=env.sagemaker_role_arn,
            kms_key_id=env.kms_key_id,
            rollback_alarms=ev.rollback_alarms
            if ev.rollback_alarms is not None
            else env.rollback_alarms,
            sagemaker=client("sagemaker"),
            autoscaling=client("application-autoscaling"),
            cloudwatch=client("cloudwatch"),
            previous=ev.previous,
            vpc={"Subnets": env.subnet_ids, "SecurityGroupIds": env.security_group_ids}
            if env.subnet_ids
            else None,
        )
    except WorkflowError:
        logger.exception("deployment step failed")
        raise
    logger.info({"message": "deployment step done", **result})
    return result
