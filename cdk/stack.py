"""The one stack: creates the constructs and wires them together (grants happen here)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from cdk.config import (
    BASE_MODELS_PREFIX,
    CHECKPOINTS_PREFIX,
    CODEBASES_PREFIX,
    DATASETS_PREFIX,
    EVAL_KEYS,
    EVALUATION_HOURS,
    MERGE_HOURS,
    PREPARE_HOURS,
    RUNS_PREFIX,
    StageConfig,
)
from cdk.constructs.batch import BatchInferenceWorkflow, BatchModelRole, BatchSettings
from cdk.constructs.functions import FunctionSpec, WorkflowFunctions
from cdk.constructs.images import ContainerImages, RegistryScanOnPush
from cdk.constructs.monitoring import EndpointAlarms, FailureTopic, TimedOutExecutions
from cdk.constructs.roles import SageMakerRoles
from cdk.constructs.storage import ArtifactStorage, EncryptionKey
from cdk.constructs.workflow import JobSettings, TrainingWorkflow
from cdk.grants import allow_key, allow_objects, allow_put
from cdk.nag import acknowledge, checkov_skip
from codetune.train import remote as train_remote
from codetune.workflow.batch import BATCH_PREFIX

REPO = Path(__file__).resolve().parents[1]
BATCH_HOURS = 24  # the transform task's timeout (a nightly job over a repository)


class CodetuneStack(Stack):
    """Fine-tuning pipeline: storage, images, roles, glue Lambdas, workflow, alarms."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.key = EncryptionKey(self, "Encryption", retain=config.retain_data).key
        self.storage = ArtifactStorage(
            self,
            "Storage",
            key=self.key,
            retain=config.retain_data,
            checkpoint_expiry_days=config.checkpoint_expiry_days,
            dataset_expiry_days=config.dataset_expiry_days,
            noncurrent_version_expiry_days=config.noncurrent_version_expiry_days,
            access_log_expiry_days=config.access_log_expiry_days,
            create_input_bucket=config.create_input_bucket,
        )
        self.images = ContainerImages(
            self,
            "Images",
            context_dir=REPO,
            training_dockerfile="training_image/Dockerfile",
            inference_dockerfile="inference_image/Dockerfile",
        )
        if config.manage_registry_scanning:
            RegistryScanOnPush(self, "ImageScanning", repository_filter="cdk-*-container-assets-*")
        self.alarms = EndpointAlarms(
            self,
            "EndpointAlarms",
            endpoint_name=config.endpoint,
            error_threshold=config.error_alarm_threshold,
            latency_threshold_microseconds=config.latency_alarm_microseconds,
        )
        self.roles = SageMakerRoles(
            self,
            "SageMakerRoles",
            key=self.key,
            repositories=self.images.repositories,
            vpc_subnet_ids=config.vpc_subnet_ids,
            vpc_security_group_ids=config.vpc_security_group_ids,
            rollback_alarm_arns=[a.alarm_arn for a in self.alarms.alarms],
        )
        _grant_sagemaker_roles(self.roles, self.storage)

        self.topic = FailureTopic(self, "Failures", key=self.key).topic
        package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=config.model_package_group,
            model_package_group_description=f"codetune adapters ({config.stage})",
        )
        self.functions = self._functions(config)
        self._grant_functions(config)

        self.workflow = self._training_workflow(config)
        TimedOutExecutions(
            self,
            "TimedOutExecutions",
            state_machine_arn=self.workflow.state_machine.state_machine_arn,
            topic=self.topic,
        )
        # EventBridge publishes to the KMS-encrypted topic as events.amazonaws.com
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy "*" means this key
            )
        )
        package_group.node.add_dependency(self.functions)  # keep logical order stable

        self.batch = self._batch_inference(config)
        TimedOutExecutions(
            self,
            "TimedOutBatchExecutions",
            state_machine_arn=self.batch.state_machine.state_machine_arn,
            topic=self.topic,
        )
        self._outputs(config)

    # -- steps of the constructor: each reads what the earlier ones made (self.key, ...) -------

    def _functions(self, config: StageConfig) -> WorkflowFunctions:
        """The glue Lambdas (one per handler in lambdas/), sharing the codetune layer."""
        return WorkflowFunctions(
            self,
            "Functions",
            lambdas_dir=REPO / "lambdas",
            deps_dir=REPO / ".cache" / "lambda-deps" / "python",
            package_dir=REPO / "src" / "codetune",
            schemas_dir=REPO / "schemas",
            configs_dir=REPO / "training_image" / "configs",
            key=self.key,
            log_retention=_retention(config.log_retention_days),
            reserved_concurrency=config.lambda_reserved_concurrency,
            specs=_function_specs(
                config,
                storage=self.storage,
                images=self.images,
                roles=self.roles,
                key=self.key,
                alarms=self.alarms,
                topic=self.topic,
            ),
        )

    def _training_workflow(self, config: StageConfig) -> TrainingWorkflow:
        """The training run's state machine, its jobs run with the stack's roles and key."""
        roles, images, key = self.roles, self.images, self.key
        return TrainingWorkflow(
            self,
            "Workflow",
            functions=self.functions.functions,
            rollback_alarm_names=self.alarms.alarm_names,
            key=key,
            log_retention=_retention(config.log_retention_days),
            timeout=Duration.hours(config.state_machine_timeout_hours),
            jobs=JobSettings(
                role_arn=roles.job_role.role_arn,
                evaluation_role_arn=roles.evaluation_role.role_arn,
                job_name_prefix=f"{config.stage}-",
                training_image_uri=images.training_image.image_uri,
                key_arn=key.key_arn,
                subnet_ids=config.vpc_subnet_ids,
                security_group_ids=config.vpc_security_group_ids,
                prepare_timeout=Duration.hours(PREPARE_HOURS),
                merge_timeout=Duration.hours(MERGE_HOURS),
                training_timeout=Duration.hours(config.training_timeout_hours),
                evaluation_timeout=Duration.hours(EVALUATION_HOURS),
            ),
        )

    def _batch_inference(self, config: StageConfig) -> BatchInferenceWorkflow:
        """Batch inference: its own model role reads the adapter, base models and batch inputs
        and writes only the answers (batch/<batchId>/output/); nothing of the input bucket."""
        key, bucket, fns = self.key, self.storage.artifact_bucket, self.functions.functions
        batch_role = BatchModelRole(
            self,
            "BatchModel",
            key=key,
            repository=self.images.inference_image.repository,
            vpc_subnet_ids=config.vpc_subnet_ids,
            vpc_security_group_ids=config.vpc_security_group_ids,
        ).role
        for prefix, reason in (
            (RUNS_PREFIX, "The batch model loads the registered adapter (model.tar.gz)."),
            (BASE_MODELS_PREFIX, "The batch model loads base-model weights under base-models/."),
            (BATCH_PREFIX, "Batch Transform reads the request lines under batch/."),
        ):
            allow_objects(batch_role, bucket, prefix, write=False, reason=reason)
        allow_put(
            batch_role,
            bucket,
            f"{BATCH_PREFIX}*/output/*",
            reason="Batch Transform uploads the answers to batch/<batchId>/output/ only.",
        )
        return BatchInferenceWorkflow(
            self,
            "BatchInference",
            validate_function=fns["validate_batch"],
            notify_function=fns["notify_failure"],
            settings=BatchSettings(
                model_role_arn=batch_role.role_arn,
                key_arn=key.key_arn,
                name_prefix=f"{config.stage}-",
                model_package_group=config.model_package_group,
                subnet_ids=config.vpc_subnet_ids,
                security_group_ids=config.vpc_security_group_ids,
                transform_timeout=Duration.hours(BATCH_HOURS),
            ),
            key=key,
            log_retention=_retention(config.log_retention_days),
        )

    def _outputs(self, config: StageConfig) -> None:
        """What a user (and `codetune train --remote`) reads from the deployed stack."""
        state_machine_arn = self.workflow.state_machine.state_machine_arn
        CfnOutput(self, "StateMachineArn", value=state_machine_arn)
        CfnOutput(
            self,
            "BatchStateMachineArn",
            description="Batch inference: a JSONL under batch/ answered by a registered adapter",
            value=self.batch.state_machine.state_machine_arn,
        )
        CfnOutput(self, "ArtifactBucketName", value=self.storage.artifact_bucket.bucket_name)
        if self.storage.input_bucket is not None:
            CfnOutput(self, "InputBucketName", value=self.storage.input_bucket.bucket_name)
        CfnOutput(self, "FailureTopicArn", value=self.topic.topic_arn)
        # What `codetune train --remote` reads (names from codetune.train.remote.OUT_*), so a
        # one-off job runs like the workflow's TrainAdapter: same image, role, key and network.
        CfnOutput(
            self,
            train_remote.OUT_IMAGE,
            description="Training image (train --remote, TrainAdapter)",
            value=self.images.training_image.image_uri,
        )
        CfnOutput(
            self,
            train_remote.OUT_ROLE,
            description="Execution role of SageMaker training/processing jobs",
            value=self.roles.job_role.role_arn,
        )
        CfnOutput(
            self,
            train_remote.OUT_KEY,
            description="KMS key of job outputs and volumes",
            value=self.key.key_arn,
        )
        if config.vpc_subnet_ids:
            CfnOutput(
                self,
                train_remote.OUT_SUBNETS,
                description="Subnets of SageMaker jobs (comma-separated)",
                value=",".join(config.vpc_subnet_ids),
            )
            CfnOutput(
                self,
                train_remote.OUT_SECURITY_GROUPS,
                description="Security groups of SageMaker jobs (comma-separated)",
                value=",".join(config.vpc_security_group_ids),
            )
        CfnOutput(
            self,
            "StartExecutionCommand",
            description="Start a run (edit examples/run-input.json first)",
            value=(
                f"aws stepfunctions start-execution --state-machine-arn {state_machine_arn} "
                "--name my-first-run --input file://examples/run-input.json"
            ),
        )

    # -- what each Lambda may call -------------------------------------------------------------

    def _grant_functions(self, config: StageConfig) -> None:
        """Each Lambda gets what its handler calls (codetune.workflow.*), on exact ARNs."""
        fns, storage, key = self.functions.functions, self.storage, self.key
        self._grant_validate_request(fns["validate_request"])
        # quality_gate: reads report.json of the run.
        allow_objects(
            fns["quality_gate"],
            storage.artifact_bucket,
            RUNS_PREFIX,
            write=False,
            reason="Reads runs/<runId>/eval/report.json of the run being gated.",
        )
        allow_key(fns["quality_gate"], key, encrypt=False)
        self._grant_register_adapter(fns["register_adapter"], config=config)
        self._grant_deploy_endpoint(fns["deploy_endpoint"], config=config)
        # smoke_test: invokes the deployed endpoint (and its components).
        fns["smoke_test"].add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint"],
                resources=[
                    self._sagemaker_arn("endpoint", config.endpoint),
                    self._sagemaker_arn("inference-component", f"{config.endpoint}-*"),
                ],
            )
        )
        acknowledge(
            _policy(fns["smoke_test"]),
            _sagemaker_finding(f"inference-component/{config.endpoint}-*"),
            COMPONENTS_REASON,
        )
        iam.Grant.add_to_principal(
            grantee=fns["notify_failure"],
            actions=["sns:Publish"],
            resource_arns=[self.topic.topic_arn],
        )
        allow_key(fns["notify_failure"], key, encrypt=True)  # the topic is KMS-encrypted

    def _grant_validate_request(self, fn) -> None:
        """validate_request: checks that the S3 inputs exist (ListBucket/GetObject)."""
        storage = self.storage
        allow_objects(
            fn,
            storage.artifact_bucket,
            None,
            write=False,
            reason="Checks that dataset/base-model URIs named in the input exist (read-only).",
        )
        if storage.input_bucket is not None:
            allow_objects(
                fn,
                storage.input_bucket,
                None,
                write=False,
                reason="Checks that the codebase URI named in the input exists (read-only).",
            )
        allow_key(fn, self.key, encrypt=False)

    def _grant_register_adapter(self, fn, *, config: StageConfig) -> None:
        """register_adapter: the package group, reads the dataset manifest, image digest."""
        storage = self.storage
        allow_objects(
            fn,
            storage.artifact_bucket,
            RUNS_PREFIX,
            write=False,
            reason="Reads the run's dataset manifest and report for the package lineage.",
        )
        allow_objects(
            fn,
            storage.artifact_bucket,
            DATASETS_PREFIX,
            write=False,
            reason="Reads a shared dataset's manifest for the package lineage.",
        )
        allow_key(fn, self.key, encrypt=False)
        packages = f"model-package/{config.model_package_group}/*"
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:DescribeModelPackageGroup",
                    "sagemaker:ListModelPackages",
                    "sagemaker:AddTags",
                ],
                resources=[
                    self._sagemaker_arn("model-package-group", config.model_package_group),
                    self._sagemaker_arn("model-package", f"{config.model_package_group}/*"),
                ],
            )
        )
        self.images.inference_image.repository.grant(fn, "ecr:DescribeImages")
        acknowledge(_policy(fn), _sagemaker_finding(packages), PACKAGES_REASON)

    def _grant_deploy_endpoint(self, fn, *, config: StageConfig) -> None:
        """deploy_endpoint: model, endpoint config (stage-prefixed names), endpoint, its
        inference components, autoscaling and the alarms it makes."""
        self._grant_deploy_sagemaker(fn, config=config)
        self._grant_deploy_autoscaling(fn, endpoint=config.endpoint)
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:CreateGrant", "kms:DescribeKey"],
                resources=[self.key.key_arn],
            )
        )
        policy = _policy(fn)
        checkov_skip(
            policy,
            "CKV_AWS_111",
            "application-autoscaling Register/Put/Delete/Deregister have no resource-level "
            "permissions; the endpoint-scoped actions are separate statements.",
        )
        acknowledge(
            policy,
            _sagemaker_finding(f"model-package/{config.model_package_group}/*"),
            PACKAGES_REASON,
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:cloudwatch:<AWS::Region>:"
            f"<AWS::AccountId>:alarm:TargetTracking-endpoint/{config.endpoint}/*]",
            "Application Auto Scaling names the target-tracking alarms of this endpoint itself.",
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:cloudwatch:<AWS::Region>:"
            f"<AWS::AccountId>:alarm:TargetTracking-inference-component/{config.endpoint}-*]",
            "Application Auto Scaling names the target-tracking alarms of the base component.",
        )
        acknowledge(
            policy,
            _sagemaker_finding(f"inference-component/{config.endpoint}-*"),
            COMPONENTS_REASON,
        )
        for kind in ("model", "endpoint-config"):
            acknowledge(
                policy,
                _sagemaker_finding(f"{kind}/{config.stage}-*"),
                "Names are made per run (<stage>-<runId>-<step>); the prefix pins the stage.",
            )

    def _grant_deploy_sagemaker(self, fn, *, config: StageConfig) -> None:
        """The SageMaker resources deploy_endpoint creates and updates, and the role it passes."""
        sm = self._sagemaker_arn
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateModel",
                    "sagemaker:DescribeModel",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:UpdateEndpoint",
                    "sagemaker:DescribeEndpoint",
                    # the only operation on a Failed endpoint (then created anew)
                    "sagemaker:DeleteEndpoint",
                    "sagemaker:AddTags",
                ],
                resources=[
                    sm("model", f"{config.stage}-*"),
                    sm("endpoint-config", f"{config.stage}-*"),
                    # ValidateRequest refuses any other deployment.endpointName
                    sm("endpoint", config.endpoint),
                ],
            )
        )
        # Inference components of the endpoint: <endpoint>-base and <endpoint>-<adapter>
        # (ValidateRequest names them). Delete is used on a Failed adapter component only.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateInferenceComponent",
                    "sagemaker:DescribeInferenceComponent",
                    "sagemaker:UpdateInferenceComponent",
                    "sagemaker:DeleteInferenceComponent",
                    "sagemaker:AddTags",
                ],
                resources=[sm("inference-component", f"{config.endpoint}-*")],
            )
        )
        # CreateInferenceComponent is also authorized against the endpoint it lands on.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateInferenceComponent"],
                resources=[sm("endpoint", config.endpoint)],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeModelPackage"],
                resources=[sm("model-package", f"{config.model_package_group}/*")],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.roles.endpoint_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )

    def _grant_deploy_autoscaling(self, fn, *, endpoint: str) -> None:
        """Application Auto Scaling of the endpoint and its base component, and its alarms."""
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "application-autoscaling:RegisterScalableTarget",
                    "application-autoscaling:DescribeScalableTargets",
                    "application-autoscaling:PutScalingPolicy",
                    "application-autoscaling:DescribeScalingPolicies",
                    "application-autoscaling:DeleteScalingPolicy",
                    "application-autoscaling:DeregisterScalableTarget",
                ],
                resources=["*"],  # scalable targets have no ARN before registration
            )
        )
        # Application Auto Scaling checks these as the caller of RegisterScalableTarget /
        # PutScalingPolicy ("Required permissions for automatic scaling", SageMaker docs).
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:UpdateEndpointWeightsAndCapacities",
                ],
                resources=[self._sagemaker_arn("endpoint", endpoint)],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:DescribeInferenceComponent",
                    "sagemaker:UpdateInferenceComponentRuntimeConfig",
                ],
                resources=[self._sagemaker_arn("inference-component", f"{endpoint}-*")],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
                resources=[
                    self._alarm_arn(f"TargetTracking-endpoint/{endpoint}/*"),
                    # the base component's target tracking alarms, named by Auto Scaling
                    self._alarm_arn(f"TargetTracking-inference-component/{endpoint}-*"),
                    # baseScaleToZero: the alarm that adds the first copy back
                    self._alarm_arn(f"{endpoint}-base-scale-out-from-zero"),
                ],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=["*"],  # listing alarms is not resource-scoped
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:CreateServiceLinkedRole"],
                resources=[
                    self.format_arn(
                        service="iam",
                        region="",
                        resource="role",
                        resource_name="aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                    )
                ],
                conditions={
                    "StringLike": {
                        "iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"
                    }
                },
            )
        )

    def _sagemaker_arn(self, kind: str, name: str) -> str:
        return self.format_arn(service="sagemaker", resource=kind, resource_name=name)

    def _alarm_arn(self, name: str) -> str:
        return self.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )


PACKAGES_REASON = "Model packages get versioned names inside the stack's package group."
COMPONENTS_REASON = (
    "One adapter component per run: <endpoint>-<adapterName>; the prefix pins the endpoint."
)


def _sagemaker_finding(resource: str) -> str:
    """The cdk-nag finding of a wildcard SageMaker ARN in this stack's account and region."""
    return (
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
        f"<AWS::AccountId>:{resource}]"
    )


def _grant_sagemaker_roles(roles: SageMakerRoles, storage: ArtifactStorage) -> None:
    """What the SageMaker jobs and the endpoint read and write in the buckets."""
    _grant_job_role(roles.job_role, storage)
    _grant_evaluation_role(roles.evaluation_role, storage.artifact_bucket)
    _grant_endpoint_role(roles.endpoint_role, storage.artifact_bucket)


def _grant_job_role(role: iam.IRole, storage: ArtifactStorage) -> None:
    """Jobs write what they produce and delete nothing but checkpoints (SageMaker's checkpoint
    sync removes what the trainer removed); they read base models and codebases. The
    evaluation job has a role of its own."""
    bucket = storage.artifact_bucket
    allow_objects(
        role,
        bucket,
        CHECKPOINTS_PREFIX,
        write=True,
        reason="Spot training syncs /opt/ml/checkpoints with checkpoints/<runId>/ both ways.",
    )
    for prefix in (RUNS_PREFIX, DATASETS_PREFIX):
        allow_objects(
            role,
            bucket,
            prefix,
            write=False,
            reason=f"Jobs read the run's objects under {prefix} (keys per run).",
        )
        allow_put(
            role,
            bucket,
            f"{prefix}*",
            reason=f"Jobs upload their outputs under {prefix} (keys per run); no deletes.",
        )
    for prefix, reason in (
        (BASE_MODELS_PREFIX, "Training/evaluation read base-model weights under base-models/."),
        (CODEBASES_PREFIX, "PrepareDataset reads codebases uploaded under codebases/."),
    ):
        allow_objects(role, bucket, prefix, write=False, reason=reason)
    if storage.input_bucket is not None:
        allow_objects(
            role,
            storage.input_bucket,
            None,
            write=False,
            reason="PrepareDataset reads the codebase prefix a user names (read-only).",
        )


def _grant_evaluation_role(role: iam.IRole, bucket) -> None:
    """Evaluation runs generated code: its role reads the adapter, dataset and base model and
    writes only eval/ prefixes; nothing of the input bucket, no deletes."""
    for prefix in (RUNS_PREFIX, DATASETS_PREFIX, BASE_MODELS_PREFIX):
        allow_objects(
            role,
            bucket,
            prefix,
            write=False,
            reason=f"Evaluation reads the adapter, dataset or base model under {prefix}.",
        )
    allow_put(
        role,
        bucket,
        EVAL_KEYS,
        reason="Evaluation uploads its report to runs/<runId>/eval/ only.",
    )


def _grant_endpoint_role(role: iam.IRole, bucket) -> None:
    """The endpoint reads the deployed adapter and base-model weights, nothing else."""
    allow_objects(
        role,
        bucket,
        RUNS_PREFIX,
        write=False,
        reason="The endpoint loads the adapter (model.tar.gz) of the deployed run.",
    )
    allow_objects(
        role,
        bucket,
        BASE_MODELS_PREFIX,
        write=False,
        reason="The endpoint loads base-model weights uploaded under base-models/.",
    )


def _function_specs(
    config: StageConfig, *, storage, images, roles, key, alarms, topic
) -> list[FunctionSpec]:
    """The glue Lambdas: timeout, memory and the environment each handler reads."""
    bucket = storage.artifact_bucket
    allowed_buckets = storage.input_bucket.bucket_name if storage.input_bucket is not None else ""
    common = {"STAGE": config.stage}
    return [
        FunctionSpec(
            name="validate_request",
            timeout=Duration.seconds(60),
            memory_mb=512,  # the planner and JSON Schema validation
            environment={
                **common,
                "ARTIFACT_BUCKET": bucket.bucket_name,
                "ALLOWED_BUCKETS": allowed_buckets,
                "MODEL_PACKAGE_GROUP": config.model_package_group,
                # the rollback alarms watch this endpoint only: other names are refused
                "ENDPOINT_NAME": config.endpoint,
                # the training task's timeout less an hour for SageMaker to start the job and
                # upload the model after MaxRuntime/MaxWait
                "MAX_TRAINING_SECONDS": str((config.training_timeout_hours - 1) * 3600),
                # what it builds the CreateTrainingJob input with (TrainAdapter sends it as it
                # is; codetune.train.job.training_job)
                "TRAINING_IMAGE_URI": images.training_image.image_uri,
                "TRAINING_ROLE_ARN": roles.job_role.role_arn,
                "KMS_KEY_ID": key.key_arn,
                "VPC_SUBNET_IDS": ",".join(config.vpc_subnet_ids),
                "VPC_SECURITY_GROUP_IDS": ",".join(config.vpc_security_group_ids),
            },
        ),
        FunctionSpec(
            name="validate_batch",
            timeout=Duration.seconds(30),
            environment={
                **common,
                "ARTIFACT_BUCKET": bucket.bucket_name,
                "MODEL_PACKAGE_GROUP": config.model_package_group,
            },
        ),
        FunctionSpec(name="quality_gate", timeout=Duration.seconds(60), environment=common),
        FunctionSpec(
            name="register_adapter",
            timeout=Duration.seconds(60),
            environment={
                **common,
                "INFERENCE_IMAGE_URI": images.inference_image.image_uri,
                "IMAGE_GIT_REVISION": images.inference_image.asset_hash,
            },
        ),
        FunctionSpec(
            name="deploy_endpoint",
            timeout=Duration.seconds(120),
            wildcard_reason="Application Auto Scaling targets have no ARN before they "
            "are registered; cloudwatch:DescribeAlarms is not resource-scoped.",
            environment={
                **common,
                "SAGEMAKER_ROLE_ARN": roles.endpoint_role.role_arn,
                "KMS_KEY_ID": key.key_arn,
                "ROLLBACK_ALARMS": ",".join(alarms.alarm_names),
                "VPC_SUBNET_IDS": ",".join(config.vpc_subnet_ids),
                "VPC_SECURITY_GROUP_IDS": ",".join(config.vpc_security_group_ids),
            },
        ),
        FunctionSpec(name="smoke_test", timeout=Duration.seconds(120), environment=common),
        FunctionSpec(
            name="notify_failure",
            timeout=Duration.seconds(30),
            environment={**common, "TOPIC_ARN": topic.topic_arn},
        ),
    ]


def _policy(function):
    """The default policy of a function's role (where its statements and acknowledgements go)."""
    return function.role.node.find_child("DefaultPolicy")


_RETENTIONS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def _retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch Logs retention that keeps logs at least `days` days."""
    for allowed, retention in sorted(_RETENTIONS.items()):
        if allowed >= days:
            return retention
    return logs.RetentionDays.TEN_YEARS
