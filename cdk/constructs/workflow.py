"""The Step Functions state machine of one fine-tuning run (docs/architecture.md, "The workflow").

State data: `$.request` is the resolved run request (ValidateRequest's output); each later
step writes its result next to it (`$.prepare`, `$.merge` after a sharded prepare, `$.tuning` with
tuning, `$.training`, `$.evaluation`, `$.gate`,
`$.registration`, `$.deployment`, `$.smoke`).

The SageMaker job states are `CustomState`s: the L2 `SageMakerCreateTrainingJob` cannot take
its request from the state (TrainAdapter sends ValidateRequest's `$.request.training.job`, the
CreateTrainingJob input `codetune.train.job.training_job` built), and there is no L2 task for
processing jobs. The Lambda states use the L2 `LambdaInvoke`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cdk.nag import acknowledge
from codetune.workflow.naming import ATTEMPT_SEPARATOR
from codetune.workflow.tuning import training_job_definition

# Lambda errors worth retrying: the handlers' RetryableError (throttling, capacity, endpoint
# busy; codetune.workflow.errors.RETRYABLE_ERRORS) and Lambda's own transient failures.
LAMBDA_TRANSIENT_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
# SageMaker API errors at CreateXJob time (quota/throttling/capacity). Every attempt gets its
# own job name, `<request.jobs.X>-r<RetryCount>` (SageMaker refuses to reuse a name, even of a
# failed job, and a create call whose answer was lost may have made the job), still
# deterministic per execution; later states read the actual name and artifacts from the task
# result ($.training.jobName, $.training.modelDataUrl). A job that started and then failed
# (States.TaskFailed: bad data, OOM, algorithm error) is not retried; the Catch reports it.
# "SageMaker.AmazonSageMakerException" is not among them: Step Functions reports every other
# service error under that name, ValidationException included, which no retry fixes.
SAGEMAKER_TRANSIENT_ERRORS = [
    "SageMaker.ResourceLimitExceededException",
    "SageMaker.ThrottlingException",
    "SageMaker.CapacityError",
]
# The sandbox minimum of the evaluation job: `codetune evaluate` refuses to run generated
# code without a seccomp filter (it works in any container; Landlock needs a newer kernel
# than every SageMaker host may have, bubblewrap namespaces SageMaker does not allow).
EVAL_SANDBOX_REQUIRE = "seccomp"
# Retries of a job state; the attempt number is one digit of the job name's "-r<n>" suffix.
SAGEMAKER_MAX_ATTEMPTS = 4
# The training job's CreateTrainingJob input, built by ValidateRequest
# (codetune.train.job.training_job); TrainAdapter sends each of these keys as it is there.
# RoleArn is the one it sets itself, to the role it may pass (ValidateRequest is given the
# same; and moto's ASL parser reads a "RoleArn.$" key as the Credentials field's).
TRAINING_JOB = "$.request.training.job"
TRAINING_JOB_KEYS = (
    "AlgorithmSpecification",
    "HyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableManagedSpotTraining",
    "EnableInterContainerTrafficEncryption",
    "CheckpointConfig",
    "Environment",
)
# Where the VolumeKey? choices put each processing job's resource block (`.prepare`, `.merge`,
# `.evaluation`): the job states take it whole.
JOB_RESOURCES = "$.jobResources"
CONTEXT_RECORD = {
    "executionName.$": "$$.Execution.Name",
    "executionArn.$": "$$.Execution.Id",
}


@dataclass(frozen=True)
class JobSettings:
    """What the SageMaker job states need from the stack (ARNs and names, no logic)."""

    role_arn: str
    evaluation_role_arn: str  # the evaluation job's: it runs generated code
    job_name_prefix: str  # SageMaker job names start with it (naming.job_names: "<stage>-")
    training_image_uri: str
    key_arn: str
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    prepare_timeout: Duration  # PrepareDataset's; PrepareDatasetSharded + MergeDataset share it
    merge_timeout: Duration
    training_timeout: Duration
    evaluation_timeout: Duration


class TrainingWorkflow(Construct):
    """The state machine: validate → prepare → train → evaluate → gate → register → deploy → smoke."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: dict[str, lambda_.IFunction],
        rollback_alarm_names: list[str],
        jobs: JobSettings,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        timeout: Duration,
        deploy_poll_interval: Duration = Duration.seconds(60),
    ) -> None:
        super().__init__(scope, construct_id)
        self._functions = functions
        self._jobs = jobs
        self._failure_path()

        validate = self._validate()
        prepare, prepared = self._prepare()
        train, trained = self._train()
        evaluate, evaluated = self._evaluate()
        gate = self._gate()
        release = self._release(rollback_alarm_names, deploy_poll_interval)

        # validate → prepare (unless the input names a dataset) → train → evaluate → gate →
        # register → deploy → smoke test; a rejected candidate ends as the run's failure.
        definition = validate.next(
            sfn.Choice(self, "DatasetPrepared?")
            .when(sfn.Condition.boolean_equals("$.request.data.skipPrepare", True), train)
            .otherwise(prepare)
        )
        for state in prepared:
            state.next(train)
        for state in trained:
            state.next(evaluate)
        for state in evaluated:
            state.next(gate)
        gate.next(
            sfn.Choice(self, "GatePassed?")
            .when(sfn.Condition.boolean_equals("$.gate.passed", True), release)
            .otherwise(self._gate_rejected())
        )
        self._state_machine(definition, key=key, log_retention=log_retention, timeout=timeout)

    # -- steps ----------------------------------------------------------------------------------

    def _failure_path(self) -> None:
        """Every task's Catch → Record<Task>Failure → NotifyFailure → Fail (`self.fail`,
        `self.notify_failure`).

        A Fail state may not raise an error named States.* (TaskFailed, Timeout, ...), so those
        end in StepFailed as "<Step>Failed" with the original name in the cause; the handlers'
        own error names (InvalidRunInput, ...) end in RunFailed unchanged."""
        self.fail = (
            sfn.Choice(self, "ServiceError?")
            .when(
                sfn.Condition.string_matches("$.error.Error", "States.*"),
                sfn.Fail(
                    self,
                    "StepFailed",
                    error_path="$.stepError",
                    cause_path="$.stepCause",
                ),
            )
            .otherwise(
                sfn.Fail(self, "RunFailed", error_path="$.error.Error", cause_path="$.error.Cause")
            )
        )
        notify = self._lambda(
            "NotifyFailure",
            "notify_failure",
            payload=sfn.TaskInput.from_object(
                {
                    "executionArn": sfn.JsonPath.string_at("$.executionArn"),
                    "executionName": sfn.JsonPath.string_at("$.executionName"),
                    "state": sfn.JsonPath.string_at("$.state"),
                    "error": sfn.JsonPath.object_at("$.error"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
            timeout=Duration.minutes(2),
            catch=False,
        )
        # A failure to notify must not hide the run's own error: go straight to the Fail.
        notify.add_catch(self.fail, errors=["States.ALL"], result_path=sfn.JsonPath.DISCARD)
        self.notify_failure = notify.next(self.fail)

    def _validate(self) -> tasks.LambdaInvoke:
        """ValidateRequest: the run input → the resolved run request (`$.request`)."""
        return self._lambda(
            "ValidateRequest",
            "validate_request",
            payload=sfn.TaskInput.from_object(
                {"input": sfn.JsonPath.entire_payload, "executionName": sfn.JsonPath.execution_name}
            ),
            result_selector={"request.$": "$"},
            result_path="$",
            timeout=Duration.minutes(2),
        )

    def _prepare(self) -> tuple[sfn.Choice, list[sfn.CustomState]]:
        """PrepareDataset, or with prepare.instanceCount > 1 PrepareDatasetSharded then
        MergeDataset; returns the entry state and the states that end it."""
        jobs = self._jobs
        # The prepare config reaches the jobs as `--set key=value` container arguments
        # (ValidateRequest renders them): SageMaker caps an environment value at 256
        # characters, a realistic config as one JSON value exceeds it.
        prepare_env = {"CODETUNE_RUN_ID.$": "$.request.runId"}
        # Scale-out (prepare.instanceCount > 1): each instance gets its part of the codebase's
        # objects (ShardedByS3Key) and writes its shard under <datasetShards><host>/; a
        # one-instance MergeDataset job then removes duplicates across shards into the dataset.
        prepare_job = {
            "job_name_path": "$.request.jobs.prepare",
            "entrypoint": "prepare",
            "resources_path": f"{JOB_RESOURCES}.prepare",
            "inputs": [("code", "$.request.data.codebaseS3Uri")],
            "environment": prepare_env,
            "arguments_path": "$.request.prepare.arguments",
            "timeout": jobs.prepare_timeout,
            "result_path": "$.prepare",
        }
        prepare = self._processing(
            "PrepareDataset", output=("dataset", "$.request.paths.dataset"), **prepare_job
        )
        sharded_timeout = jobs.prepare_timeout.minus(jobs.merge_timeout)
        prepare_sharded = self._processing(
            "PrepareDatasetSharded",
            output=("dataset", "$.request.paths.datasetShards"),
            distribution="ShardedByS3Key",
            **{**prepare_job, "timeout": sharded_timeout},
        )
        merge = self._processing(
            "MergeDataset",
            job_name_path="$.request.jobs.merge",
            entrypoint="prepare",
            arguments_path="$.request.prepare.mergeArguments",
            resources_path=f"{JOB_RESOURCES}.merge",
            inputs=[("shards", "$.request.paths.datasetShards")],
            output=("dataset", "$.request.paths.dataset"),
            environment=prepare_env,
            timeout=jobs.merge_timeout,
            result_path="$.merge",
        )
        # SageMaker refuses VolumeKmsKeyId on instance types with NVMe instance storage (g5,
        # p4d...): ValidateRequest says per processing job whether the key applies, and a
        # Choice before each builds its resource block with or without it (output is always
        # encrypted). The training job's ResourceConfig comes decided in training.job.
        entry = self._volume_key_choice(
            "Prepare",
            "$.request.prepare",
            {
                "InstanceType.$": "$.request.prepare.instanceType",
                "InstanceCount.$": "$.request.prepare.instanceCount",
                "VolumeSizeInGB": 100,
            },
            sfn.Choice(self, "PrepareSharded?")
            .when(
                sfn.Condition.number_greater_than("$.request.prepare.instanceCount", 1),
                prepare_sharded,
            )
            .otherwise(prepare),
        )
        merge_resources = self._volume_key_choice(
            "Merge",
            "$.request.prepare",
            {
                "InstanceType.$": "$.request.prepare.instanceType",
                "InstanceCount": 1,
                "VolumeSizeInGB": 100,
            },
            merge,
        )
        prepare_sharded.next(merge_resources)
        return entry, [prepare, merge]

    def _train(self) -> tuple[sfn.Choice, list[sfn.CustomState]]:
        """TrainAdapter, or with a tuning section a tuning job whose trials are this training
        job, then the best trial's training job read back as $.training (what the later states
        use); returns the entry state and the states that end it."""
        tune, best_trial = self._tuning(), self._best_trial()
        tune.next(best_trial)
        train = (
            sfn.Choice(self, "Tuning?")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.request.tuning"),
                    sfn.Condition.is_not_null("$.request.tuning"),
                ),
                tune,
            )
            .otherwise(train_job := self._training())
        )
        return train, [train_job, best_trial]

    def _evaluate(self) -> tuple[sfn.Choice, list[sfn.CustomState]]:
        """EvaluateAdapter (with the base model as a channel when it is in S3, network-isolated
        then) on its resource block; returns the entry state and the states that end it."""
        variants = [self._evaluation(s3_model=False), self._evaluation(s3_model=True)]
        evaluate_choice = sfn.Choice(self, "BaseModelInS3ForEvaluation?")
        evaluate_choice.when(_has_s3_model(), variants[1]).otherwise(variants[0])
        entry = self._volume_key_choice(
            "Evaluation",
            "$.request.evaluation",
            {
                "InstanceType.$": "$.request.evaluation.instanceType",
                "InstanceCount": 1,
                "VolumeSizeInGB": 100,
            },
            evaluate_choice,
        )
        return entry, variants

    def _gate(self) -> tasks.LambdaInvoke:
        """QualityGate: the evaluation report against the thresholds (`$.gate`)."""
        return self._lambda(
            "QualityGate",
            "quality_gate",
            payload=sfn.TaskInput.from_object(
                {
                    "request": sfn.JsonPath.object_at("$.request"),
                    "reportUri": sfn.JsonPath.string_at("$.request.paths.report"),
                }
            ),
            result_path="$.gate",
            timeout=Duration.minutes(2),
        )

    def _gate_rejected(self) -> sfn.Pass:
        return sfn.Pass(
            self,
            "GateRejected",
            comment="The candidate did not beat the thresholds: report it as the run's failure.",
            parameters={
                "state": "QualityGate",
                "error": {
                    "Error": "QualityGateRejected",
                    "Cause.$": "States.JsonToString($.gate.reasons)",
                },
                **CONTEXT_RECORD,
            },
        ).next(self.notify_failure)

    def _release(self, rollback_alarm_names: list[str], poll_interval: Duration) -> sfn.IChainable:
        """RegisterAdapter, then (when approved and deployment is on) DeployEndpoint polled
        until InService and SmokeTest; each way ends in a summary of the run."""
        register = self._lambda(
            "RegisterAdapter",
            "register_adapter",
            payload=sfn.TaskInput.from_object(
                {
                    "request": sfn.JsonPath.object_at("$.request"),
                    "gate": sfn.JsonPath.object_at("$.gate"),
                    "modelDataUrl": sfn.JsonPath.string_at("$.training.modelDataUrl"),
                    # the training job (with tuning, BestTrial's: trial name, hyperparameters)
                    "training": sfn.JsonPath.object_at("$.training"),
                }
            ),
            result_path="$.registration",
            timeout=Duration.minutes(2),
        )
        summary_fields = {
            "runId.$": "$.request.runId",
            "modelPackageArn.$": "$.registration.modelPackageArn",
            "approvalStatus.$": "$.registration.approvalStatus",
            "reportUri.$": "$.gate.reportUri",
            "metrics.$": "$.gate.metrics",
        }
        not_deployed = sfn.Pass(
            self,
            "SummarizeRegistered",
            comment="Registered but not deployed: awaiting manual approval, or deployment off.",
            parameters=summary_fields,
        ).next(sfn.Succeed(self, "RegisteredNotDeployed"))
        deployed = sfn.Pass(
            self,
            "SummarizeDeployed",
            parameters={**summary_fields, "endpointName.$": "$.deployment.endpointName"},
        ).next(sfn.Succeed(self, "Deployed"))
        return register.next(
            sfn.Choice(self, "DeployAdapter?")
            .when(
                sfn.Condition.boolean_equals("$.registration.deploy", True),
                self._deploy_loop(rollback_alarm_names, poll_interval, then=deployed),
            )
            .otherwise(not_deployed)
        )

    def _deploy_loop(
        self, rollback_alarm_names: list[str], poll_interval: Duration, *, then: sfn.IChainable
    ) -> sfn.IChainable:
        """StartDeployment → DeployEndpoint, every `poll_interval` until the endpoint is
        InService → SmokeTest → `then`."""
        deploy = self._lambda(
            "DeployEndpoint",
            "deploy_endpoint",
            payload=sfn.TaskInput.from_object(
                {
                    "request": sfn.JsonPath.object_at("$.request"),
                    "registration": sfn.JsonPath.object_at("$.registration"),
                    "previous": sfn.JsonPath.object_at("$.deployment"),
                    "rollbackAlarms": rollback_alarm_names,
                }
            ),
            result_path="$.deployment",
            timeout=Duration.minutes(5),
        )
        smoke = self._lambda(
            "SmokeTest",
            "smoke_test",
            payload=sfn.TaskInput.from_object({"request": sfn.JsonPath.object_at("$.request")}),
            result_path="$.smoke",
            timeout=Duration.minutes(5),
        )
        wait = sfn.Wait(self, "WaitForEndpoint", time=sfn.WaitTime.duration(poll_interval))
        return (
            sfn.Pass(
                self,
                "StartDeployment",
                parameters={"action": "start", "status": "NotStarted"},
                result_path="$.deployment",
            )
            .next(deploy)
            .next(
                sfn.Choice(self, "EndpointInService?")
                .when(
                    sfn.Condition.string_equals("$.deployment.status", "InService"),
                    smoke.next(then),
                )
                .otherwise(wait.next(deploy))
            )
        )

    def _state_machine(
        self,
        definition: sfn.IChainable,
        *,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        timeout: Duration,
    ) -> None:
        """The state machine (`self.state_machine`, logging to `self.log_group`) and what its
        role may call."""
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, encryption_key=key)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=timeout,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            comment="codetune: fine-tune, evaluate, register and serve a code LLM adapter",
        )
        self._grant_sagemaker_jobs(self.state_machine.role)
        policy = self.state_machine.role.node.find_child("DefaultPolicy")
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray tracing and CloudWatch Logs delivery actions have no resource type.",
        )
        for kind in ("training-job", "processing-job", "hyper-parameter-tuning-job"):
            acknowledge(
                policy,
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
                f"<AWS::AccountId>:{kind}/{self._jobs.job_name_prefix}*]",
                "Job names are made per run (<stage>-<runId>-<step>); the prefix pins the stage.",
            )
        for fn in self._functions.values():
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::<{Stack.of(self).get_logical_id(fn.node.default_child)}.Arn>:*]",
                "LambdaInvoke may call any version/alias of this one function.",
            )

    # -- states -------------------------------------------------------------------------------

    def _lambda(
        self,
        name: str,
        function: str,
        *,
        payload: sfn.TaskInput,
        result_path: str,
        timeout: Duration,
        result_selector: dict | None = None,
        catch: bool = True,
    ) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            name,
            state_name=name,
            lambda_function=self._functions[function],
            payload=payload,
            payload_response_only=True,
            retry_on_service_exceptions=False,  # explicit Retry below, with our error names
            result_selector=result_selector,
            result_path=result_path,
            task_timeout=sfn.Timeout.duration(timeout),
        )
        task.add_retry(
            errors=["RetryableError", *LAMBDA_TRANSIENT_ERRORS],
            interval=Duration.seconds(5),
            backoff_rate=2,
            max_attempts=5,
            jitter_strategy=sfn.JitterType.FULL,
        )
        if catch:
            self._catch(task, name)
        return task

    def _catch(self, task: sfn.TaskStateBase | sfn.CustomState, name: str) -> None:
        catch_to(self, task, name, self.notify_failure)

    def _custom(
        self,
        name: str,
        resource: str,
        parameters: dict,
        timeout: Duration,
        result_selector: dict,
        result_path: str,
    ) -> sfn.CustomState:
        state = sagemaker_task(
            self, name, resource, parameters, timeout, result_selector, result_path
        )
        self._catch(state, name)
        return state

    def _volume_key_choice(
        self, job: str, spec_path: str, resources: dict, next_state: sfn.IChainable
    ) -> sfn.Choice:
        """`<job>VolumeKey?`: put the job's resource block (ResourceConfig / ClusterConfig) at
        `$.jobResources.<job>`, with `VolumeKmsKeyId` unless `<spec>.volumeKmsKey` is false."""
        result_path = f"{JOB_RESOURCES}.{job.lower()}"
        with_key = sfn.Pass(
            self,
            f"{job}ResourcesWithVolumeKey",
            parameters={**resources, "VolumeKmsKeyId": self._jobs.key_arn},
            result_path=result_path,
        )
        local_storage = sfn.Pass(
            self,
            f"{job}ResourcesLocalStorage",
            comment="NVMe instance storage: SageMaker encrypts it and refuses VolumeKmsKeyId.",
            parameters=dict(resources),
            result_path=result_path,
        )
        with_key.next(next_state)
        local_storage.next(next_state)
        return (
            sfn.Choice(self, f"{job}VolumeKey?")
            .when(sfn.Condition.boolean_equals(f"{spec_path}.volumeKmsKey", False), local_storage)
            .otherwise(with_key)
        )

    def _network(self, *, isolate: bool) -> dict:
        network: dict = {
            "EnableInterContainerTrafficEncryption": True,
            "EnableNetworkIsolation": isolate,
        }
        if self._jobs.subnet_ids:
            network["VpcConfig"] = {
                "Subnets": list(self._jobs.subnet_ids),
                "SecurityGroupIds": list(self._jobs.security_group_ids),
            }
        return network

    def _processing(
        self,
        name: str,
        *,
        job_name_path: str,
        entrypoint: str,
        inputs: list[tuple[str, str]],
        output: tuple[str, str],
        environment: dict,
        timeout: Duration,
        result_path: str,
        resources_path: str,
        isolate: bool = False,
        distribution: str = "FullyReplicated",
        arguments_path: str | None = None,
        role_arn: str | None = None,
    ) -> sfn.CustomState:
        jobs = self._jobs
        app: dict = {"ImageUri": jobs.training_image_uri, "ContainerEntrypoint": [entrypoint]}
        if arguments_path:
            app["ContainerArguments.$"] = arguments_path
        return self._custom(
            name,
            "sagemaker:createProcessingJob.sync",
            {
                "ProcessingJobName.$": attempt_job_name(job_name_path),
                "RoleArn": role_arn or jobs.role_arn,
                "AppSpecification": app,
                # Built by the <Job>VolumeKey? choice before the job (volume_key_choice).
                "ProcessingResources": {"ClusterConfig.$": resources_path},
                "ProcessingInputs": [
                    {
                        "InputName": channel,
                        "S3Input": {
                            "S3Uri.$": path,
                            "LocalPath": f"/opt/ml/processing/input/{channel}",
                            "S3DataType": "S3Prefix",
                            "S3InputMode": "File",
                            "S3DataDistributionType": distribution,
                        },
                    }
                    for channel, path in inputs
                ],
                "ProcessingOutputConfig": {
                    "KmsKeyId": jobs.key_arn,
                    "Outputs": [
                        {
                            "OutputName": output[0],
                            "S3Output": {
                                "S3Uri.$": output[1],
                                "LocalPath": f"/opt/ml/processing/output/{output[0]}",
                                "S3UploadMode": "EndOfJob",
                            },
                        }
                    ],
                },
                "StoppingCondition": {"MaxRuntimeInSeconds": int(timeout.to_seconds())},
                "NetworkConfig": self._network(isolate=isolate),
                "Environment": environment,
            },
            timeout,
            {"jobName.$": "$.ProcessingJobName", "status.$": "$.ProcessingJobStatus"},
            result_path,
        )

    def _evaluation(self, *, s3_model: bool) -> sfn.CustomState:
        inputs = [("adapter", "$.training.modelDataUrl"), ("dataset", "$.request.paths.dataset")]
        if s3_model:
            inputs.append(("model", "$.request.baseModel.s3Uri"))
        return self._processing(
            "EvaluateAdapter" + ("S3Model" if s3_model else ""),
            job_name_path="$.request.jobs.evaluate",
            entrypoint="evaluate",
            resources_path=f"{JOB_RESOURCES}.evaluation",
            inputs=inputs,
            output=("eval", "$.request.paths.eval"),
            # the run's EvalConfig keys, validated by ValidateRequest with the job's loader
            arguments_path="$.request.evaluation.arguments",
            environment={
                "CODETUNE_RUN_ID.$": "$.request.runId",
                "CODETUNE_BASE_MODEL.$": "$.request.baseModel.id",
                "CODETUNE_ADAPTER_URI.$": "$.training.modelDataUrl",
                "CODETUNE_SANDBOX_REQUIRE": EVAL_SANDBOX_REQUIRE,
            },
            timeout=self._jobs.evaluation_timeout,
            result_path="$.evaluation",
            role_arn=self._jobs.evaluation_role_arn,
            # Generated code is untrusted; without internet it cannot exfiltrate. Only
            # possible when the base model comes from S3 (no hub download needed).
            isolate=s3_model,
        )

    def _training_job(self) -> dict:
        """TrainAdapter's CreateTrainingJob parameters: ValidateRequest's block, key by key."""
        params: dict = {
            "TrainingJobName.$": attempt_job_name("$.request.jobs.train"),
            "RoleArn": self._jobs.role_arn,
            **{f"{key}.$": f"{TRAINING_JOB}.{key}" for key in TRAINING_JOB_KEYS},
        }
        if self._jobs.subnet_ids:
            # ValidateRequest has the same subnets (its VPC_SUBNET_IDS) and sends VpcConfig
            params["VpcConfig.$"] = f"{TRAINING_JOB}.VpcConfig"
        return params

    def _tuning(self) -> sfn.CustomState:
        """A tuning job whose trials are the training job TrainAdapter would start (its
        parameters as the TrainingJobDefinition), with the tuned keys as ranges
        (ValidateRequest renders the config and the static hyperparameters)."""
        definition = training_job_definition(
            self._training_job(), "$.request.tuning.staticHyperparameters"
        )
        return self._custom(
            "TuneAdapter",
            "sagemaker:createHyperParameterTuningJob.sync",
            {
                "HyperParameterTuningJobName.$": attempt_job_name("$.request.tuning.jobName"),
                "HyperParameterTuningJobConfig.$": "$.request.tuning.jobConfig",
                "TrainingJobDefinition": definition,
            },
            self._jobs.training_timeout,
            {
                "jobName.$": "$.HyperParameterTuningJobName",
                "status.$": "$.HyperParameterTuningJobStatus",
                "bestTrainingJob.$": "$.BestTrainingJob.TrainingJobName",
                "tunedHyperparameters.$": "$.BestTrainingJob.TunedHyperParameters",
                "objective.$": "$.BestTrainingJob.FinalHyperParameterTuningJobObjectiveMetric",
            },
            "$.tuning",
        )

    def _best_trial(self) -> sfn.CustomState:
        """The best trial's training job (DescribeTrainingJob) as `$.training`: its name, its
        hyperparameters and the adapter the later states evaluate, register and serve."""
        return self._custom(
            "BestTrial",
            "aws-sdk:sagemaker:describeTrainingJob",
            {"TrainingJobName.$": "$.tuning.bestTrainingJob"},
            Duration.minutes(2),
            {
                "jobName.$": "$.TrainingJobName",
                "status.$": "$.TrainingJobStatus",
                "modelDataUrl.$": "$.ModelArtifacts.S3ModelArtifacts",
                "hyperparameters.$": "$.HyperParameters",
            },
            "$.training",
        )

    def _training(self) -> sfn.CustomState:
        return self._custom(
            "TrainAdapter",
            "sagemaker:createTrainingJob.sync",
            self._training_job(),
            self._jobs.training_timeout,
            {
                "jobName.$": "$.TrainingJobName",
                "status.$": "$.TrainingJobStatus",
                "modelDataUrl.$": "$.ModelArtifacts.S3ModelArtifacts",
            },
            "$.training",
        )

    # -- permissions ----------------------------------------------------------------------------

    def _grant_sagemaker_jobs(self, role: iam.IRole) -> None:
        """What the CustomStates need (CDK adds nothing for them): jobs, PassRole, .sync rules."""
        stack = Stack.of(self)
        job_arns = [
            stack.format_arn(
                service="sagemaker", resource=kind, resource_name=f"{self._jobs.job_name_prefix}*"
            )
            for kind in ("training-job", "processing-job")
        ]
        tuning_arn = stack.format_arn(
            service="sagemaker",
            resource="hyper-parameter-tuning-job",
            resource_name=f"{self._jobs.job_name_prefix}*",
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=job_arns,
            )
        )
        # the tuning job's .sync task; its trials are training jobs named
        # <tuning job>-<nnn>-<hash>, so the training-job grants above cover BestTrial's Describe
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateHyperParameterTuningJob",
                    "sagemaker:DescribeHyperParameterTuningJob",
                    "sagemaker:StopHyperParameterTuningJob",
                    "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=[tuning_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self._jobs.role_arn, self._jobs.evaluation_role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        # .sync integrations watch jobs through these Step Functions-managed EventBridge rules.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(service="events", resource="rule", resource_name=rule)
                    for rule in (
                        "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                        "StepFunctionsGetEventsForSageMakerProcessingJobsRule",
                        "StepFunctionsGetEventsForSageMakerTuningJobsRule",
                    )
                ],
            )
        )
        # Volume and output encryption with the stack key: SageMaker uses grants on behalf
        # of the caller that creates the job.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "kms:CreateGrant",
                    "kms:DescribeKey",
                    "kms:GenerateDataKey",
                    "kms:Decrypt",
                ],
                resources=[self._jobs.key_arn],
            )
        )


def attempt_job_name(base_path: str) -> str:
    """The job name of this attempt: ``<base>-r<RetryCount>`` (codetune.workflow.naming.
    attempt_name renders the same string; the base names leave room for the suffix)."""
    return f"States.Format('{{}}{ATTEMPT_SEPARATOR}{{}}', {base_path}, $$.State.RetryCount)"


def _has_s3_model() -> sfn.Condition:
    return sfn.Condition.and_(
        sfn.Condition.is_present("$.request.baseModel.s3Uri"),
        sfn.Condition.is_string("$.request.baseModel.s3Uri"),
    )


def sagemaker_task(
    scope: Construct,
    name: str,
    resource: str,
    parameters: dict,
    timeout: Duration,
    result_selector: dict,
    result_path: str,
) -> sfn.CustomState:
    """A SageMaker service-integration task (``resource`` e.g. ``sagemaker:createTrainingJob.sync``)
    with the transient-error retry every job state uses; the caller adds its Catch."""
    state = sfn.CustomState(
        scope,
        name,
        state_json={
            "Type": "Task",
            "Resource": Stack.of(scope).format_arn(
                service="states", account="", region="", resource=resource
            ),
            "Parameters": parameters,
            "TimeoutSeconds": int(timeout.to_seconds()),
            "ResultSelector": result_selector,
            "ResultPath": result_path,
        },
    )
    state.add_retry(
        errors=SAGEMAKER_TRANSIENT_ERRORS,
        interval=Duration.seconds(60),
        backoff_rate=2,
        max_attempts=SAGEMAKER_MAX_ATTEMPTS,
        jitter_strategy=sfn.JitterType.FULL,
    )
    return state


def catch_to(
    scope: Construct,
    task: sfn.TaskStateBase | sfn.CustomState,
    name: str,
    notify: sfn.IChainable,
) -> None:
    """Any error of ``task`` -> ``Record<name>Failure`` (state, error, step error and cause,
    execution context) -> ``notify``."""
    record = sfn.Pass(
        scope,
        f"Record{name}Failure",
        parameters={
            "state": name,
            "error.$": "$.error",
            "stepError": f"{name}Failed",
            "stepCause.$": "States.Format('{}: {}', $.error.Error, $.error.Cause)",
            **CONTEXT_RECORD,
        },
    ).next(notify)
    task.add_catch(record, errors=["States.ALL"], result_path="$.error")
