"""Batch inference: a second, small state machine running a SageMaker Batch Transform job on
the inference image (docs/architecture.md, "Serving", batch inference).

ValidateBatch → CreateBatchModel (from the registered model package, under the batch role)
→ TransformVolumeKey? → RunBatchTransform (``createTransformJob.sync``) → BatchDone
with ``{batchId, jobName, output}``; every task's Catch → NotifyFailure → Fail.

Why a second state machine rather than a workflow option: a batch job answers a JSONL with
an adapter already registered — it shares no step with training, runs on its own schedule
(nightly over a repository), and its role and permissions stay apart from the training run's.

The transform job: ``SplitType: Line`` + ``BatchStrategy: SingleRecord`` (each line is one
``/invocations`` JSON body; MultiRecord would send several lines in one body), ``AssembleWith:
Line`` (answer n on line n), ``MaxConcurrentTransforms`` from the request (0 = the container's
``/execution-parameters``, the engine's batch rows), output and volume encrypted with the
stack key, the job's adapter (if any) as ``CODETUNE_DEFAULT_MODEL``. No ``DataProcessing``
join: the answers are line-aligned, and joining would copy every prompt into the output.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cdk.constructs.roles import allow_vpc_interfaces
from cdk.constructs.workflow import (
    LAMBDA_TRANSIENT_ERRORS,
    attempt_job_name,
    catch_to,
    sagemaker_task,
)
from cdk.grants import allow_key
from cdk.nag import acknowledge

SAGEMAKER = iam.ServicePrincipal("sagemaker.amazonaws.com")
TRANSFORM_LOG_GROUP = "/aws/sagemaker/TransformJobs"
RESOURCES = "$.jobResources.transform"


class BatchModelRole(Construct):
    """`role`: the execution role of the batch model (SageMaker reads the input lines and the
    adapter, writes the answers, pulls the image, logs). S3 grants happen in the stack."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        repository: ecr.IRepository,
        vpc_subnet_ids: tuple[str, ...],
        vpc_security_group_ids: tuple[str, ...],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.role = role = iam.Role(
            self,
            "Role",
            assumed_by=SAGEMAKER,
            description="codetune Batch Transform model (inference container over a JSONL)",
        )
        allow_key(role, key, encrypt=True)  # reads the KMS-encrypted bucket, writes answers
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:CreateGrant"],  # TransformResources.VolumeKmsKeyId
                resources=[key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": True}},
            )
        )
        repository.grant_pull(role)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"{TRANSFORM_LOG_GROUP}:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resource type; namespace-scoped
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )
        if vpc_subnet_ids:
            allow_vpc_interfaces(stack, role, vpc_subnet_ids, vpc_security_group_ids)
        _acknowledge_role(role.node.find_child("DefaultPolicy"), vpc=bool(vpc_subnet_ids))


def _acknowledge_role(policy, *, vpc: bool) -> None:
    acknowledge(
        policy,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
        f"<AWS::AccountId>:log-group:{TRANSFORM_LOG_GROUP}:*]",
        "SageMaker names one log stream per transform job instance in its fixed log group.",
    )
    acknowledge(
        policy,
        "AwsSolutions-IAM5[Resource::*]",
        "cloudwatch:PutMetricData has no resource type (namespace condition); "
        "ecr:GetAuthorizationToken is account-wide by design"
        + ("; ec2:Describe* have no resource-level permissions" if vpc else "")
        + ".",
    )
    if vpc:
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:"
            "<AWS::AccountId>:network-interface/*]",
            "SageMaker creates the ENIs with generated ids in the configured subnets.",
        )


@dataclass(frozen=True)
class BatchSettings:
    """What the batch states need from the stack (ARNs and names, no logic)."""

    model_role_arn: str
    key_arn: str
    name_prefix: str  # SageMaker model/job names start with it ("<stage>-")
    model_package_group: str
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    transform_timeout: Duration


class BatchInferenceWorkflow(Construct):
    """The batch state machine: validate → model → transform (see the module docstring)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        validate_function: lambda_.IFunction,
        notify_function: lambda_.IFunction,
        settings: BatchSettings,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._notify = self._failure_path(notify_function)
        validate = self._lambda(
            "ValidateBatch",
            validate_function,
            payload=sfn.TaskInput.from_object(
                {"input": sfn.JsonPath.entire_payload, "executionName": sfn.JsonPath.execution_name}
            ),
            result_selector={"request.$": "$"},
            result_path="$",
        )
        self._catch(validate, "ValidateBatch")
        transform = self._transform(settings.transform_timeout)
        transform.next(
            sfn.Pass(
                self,
                "SummarizeBatch",
                parameters={
                    "batchId.$": "$.request.batchId",
                    "jobName.$": "$.transform.jobName",
                    "output.$": "$.transform.output",
                },
            ).next(sfn.Succeed(self, "BatchDone"))
        )
        definition = validate.next(self._create_model()).next(self._resources_choice(transform))
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, encryption_key=key)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            # validate + model + the transform's queueing before it starts
            timeout=settings.transform_timeout.plus(Duration.minutes(30)),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            comment="codetune: answer a JSONL of requests with a registered adapter",
        )
        self._grant(self.state_machine.role)
        policy = self.state_machine.role.node.find_child("DefaultPolicy")
        for fn in (validate_function, notify_function):
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::<{Stack.of(self).get_logical_id(fn.node.default_child)}.Arn>:*]",
                "LambdaInvoke may call any version/alias of this one function.",
            )

    # -- states -------------------------------------------------------------------------------

    def _lambda(self, name, function, *, payload, result_path, result_selector=None):
        task = tasks.LambdaInvoke(
            self,
            name,
            lambda_function=function,
            payload=payload,
            payload_response_only=True,
            retry_on_service_exceptions=False,  # explicit Retry below, with our error names
            result_selector=result_selector,
            result_path=result_path,
            task_timeout=sfn.Timeout.duration(Duration.minutes(2)),
        )
        task.add_retry(
            errors=["RetryableError", *LAMBDA_TRANSIENT_ERRORS],
            interval=Duration.seconds(5),
            backoff_rate=2,
            max_attempts=5,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return task

    def _failure_path(self, notify_function) -> sfn.IChainable:
        """NotifyFailure → Fail (StepFailed for States.* errors, which a Fail may not raise)."""
        fail = (
            sfn.Choice(self, "ServiceError?")
            .when(
                sfn.Condition.string_matches("$.error.Error", "States.*"),
                sfn.Fail(self, "StepFailed", error_path="$.stepError", cause_path="$.stepCause"),
            )
            .otherwise(
                sfn.Fail(
                    self, "BatchFailed", error_path="$.error.Error", cause_path="$.error.Cause"
                )
            )
        )
        notify = self._lambda(
            "NotifyFailure",
            notify_function,
            payload=sfn.TaskInput.from_object(
                {
                    "executionArn": sfn.JsonPath.string_at("$.executionArn"),
                    "executionName": sfn.JsonPath.string_at("$.executionName"),
                    "state": sfn.JsonPath.string_at("$.state"),
                    "error": sfn.JsonPath.object_at("$.error"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        # A failure to notify must not hide the batch's own error: go straight to the Fail.
        notify.add_catch(fail, errors=["States.ALL"], result_path=sfn.JsonPath.DISCARD)
        return notify.next(fail)

    def _create_model(self) -> sfn.CustomState:
        s = self._settings
        params: dict = {
            "ModelName.$": "$.request.modelName",
            "ExecutionRoleArn": s.model_role_arn,
            "PrimaryContainer": {"ModelPackageName.$": "$.request.modelPackageArn"},
            "Tags": [{"Key": "codetune:batchId", "Value.$": "$.request.batchId"}],
        }
        if s.subnet_ids:
            params["VpcConfig"] = {
                "Subnets": list(s.subnet_ids),
                "SecurityGroupIds": list(s.security_group_ids),
            }
        return self._sagemaker(
            "CreateBatchModel",
            "sagemaker:createModel",
            params,
            Duration.minutes(5),
            {"modelArn.$": "$.ModelArn"},
            "$.model",
        )

    def _transform(self, timeout: Duration) -> sfn.CustomState:
        return self._sagemaker(
            "RunBatchTransform",
            "sagemaker:createTransformJob.sync",
            {
                "TransformJobName.$": attempt_job_name("$.request.jobName"),
                "ModelName.$": "$.request.modelName",
                "BatchStrategy": "SingleRecord",
                "MaxConcurrentTransforms.$": "$.request.maxConcurrentTransforms",
                "MaxPayloadInMB.$": "$.request.maxPayloadInMB",
                "ModelClientConfig": {
                    "InvocationsTimeoutInSeconds.$": "$.request.invocationTimeoutSeconds",
                    "InvocationsMaxRetries": 1,
                },
                "Environment.$": "$.request.environment",
                "TransformInput": {
                    "DataSource": {
                        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri.$": "$.request.input"}
                    },
                    "ContentType": "application/json",
                    "CompressionType": "None",
                    "SplitType": "Line",
                },
                "TransformOutput": {
                    "S3OutputPath.$": "$.request.output",
                    "Accept": "application/json",
                    "AssembleWith": "Line",
                    "KmsKeyId": self._settings.key_arn,
                },
                # Built by TransformVolumeKey? (NVMe instance storage refuses a volume key).
                "TransformResources.$": RESOURCES,
                "Tags": [{"Key": "codetune:batchId", "Value.$": "$.request.batchId"}],
            },
            timeout,
            {
                "jobName.$": "$.TransformJobName",
                "status.$": "$.TransformJobStatus",
                "output.$": "$.TransformOutput.S3OutputPath",
            },
            "$.transform",
        )

    def _resources_choice(self, transform: sfn.IChainable) -> sfn.Choice:
        """`TransformVolumeKey?`: TransformResources with the stack key unless the request
        says the instance type has NVMe storage (SageMaker refuses a key there)."""
        resources = {
            "InstanceType.$": "$.request.instanceType",
            "InstanceCount.$": "$.request.instanceCount",
        }
        with_key = sfn.Pass(
            self,
            "TransformResourcesWithVolumeKey",
            parameters={**resources, "VolumeKmsKeyId": self._settings.key_arn},
            result_path=RESOURCES,
        )
        local_storage = sfn.Pass(
            self,
            "TransformResourcesLocalStorage",
            comment="NVMe instance storage: SageMaker encrypts it and refuses VolumeKmsKeyId.",
            parameters=resources,
            result_path=RESOURCES,
        )
        with_key.next(transform)
        local_storage.next(transform)
        return (
            sfn.Choice(self, "TransformVolumeKey?")
            .when(sfn.Condition.boolean_equals("$.request.volumeKmsKey", False), local_storage)
            .otherwise(with_key)
        )

    def _catch(self, task, name: str) -> None:
        catch_to(self, task, name, self._notify)

    def _sagemaker(
        self, name, resource, parameters, timeout, result_selector, result_path
    ) -> sfn.CustomState:
        state = sagemaker_task(
            self, name, resource, parameters, timeout, result_selector, result_path
        )
        self._catch(state, name)
        return state

    def _grant(self, role: iam.IRole) -> None:
        """What the SageMaker states need (CDK adds nothing for CustomStates)."""
        stack = Stack.of(self)
        s = self._settings
        sm = lambda kind, name: stack.format_arn(  # noqa: E731
            service="sagemaker", resource=kind, resource_name=name
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateModel", "sagemaker:AddTags"],
                resources=[sm("model", f"{s.name_prefix}*")],
            )
        )
        # CreateModel from a package: the caller must be able to read the package.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeModelPackage"],
                resources=[sm("model-package", f"{s.model_package_group}/*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTransformJob",
                    "sagemaker:DescribeTransformJob",
                    "sagemaker:StopTransformJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=[sm("transform-job", f"{s.name_prefix}*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[s.model_role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForSageMakerTransformJobsRule",
                    )
                ],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["kms:CreateGrant", "kms:DescribeKey"], resources=[s.key_arn]
            )
        )
        policy = role.node.find_child("DefaultPolicy")
        finding = "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:{}]"
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray tracing and CloudWatch Logs delivery actions have no resource type.",
        )
        for kind in ("model", "transform-job"):
            acknowledge(
                policy,
                finding.format(f"{kind}/{s.name_prefix}*"),
                "Names are made per batch (<stage>-<batchId>-...); the prefix pins the stage.",
            )
        acknowledge(
            policy,
            finding.format(f"model-package/{s.model_package_group}/*"),
            "Model packages get versioned names inside the stack's package group.",
        )
