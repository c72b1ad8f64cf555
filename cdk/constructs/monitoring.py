"""Failure notifications and the endpoint alarms that drive blue/green auto-rollback."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct


class FailureTopic(Construct):
    """KMS-encrypted SNS topic that NotifyFailure publishes to; subscribe people to it."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="codetune workflow failures",
            master_key=key,
            enforce_ssl=True,
        )


class EndpointAlarms(Construct):
    """Alarms on the endpoint's 5xx errors and model latency.

    `deploy_endpoint` passes `alarm_names` as the AutoRollbackConfiguration of a blue/green
    update, so a new model that errors or slows down is rolled back by SageMaker. The
    alarms watch the AllTraffic variant of every endpoint the workflow deploys
    (the endpoint name is chosen per run, hence `endpoint_name` here is the stage default).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoint_name: str,
        error_threshold: int,
        latency_threshold_microseconds: int,
    ) -> None:
        super().__init__(scope, construct_id)
        dimensions = {"EndpointName": endpoint_name, "VariantName": "AllTraffic"}
        self.errors_alarm = cloudwatch.Alarm(
            self,
            "Invocation5xxAlarm",
            alarm_description="codetune endpoint returns 5xx errors (rolls a deployment back)",
            metric=cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="Invocation5XXErrors",
                dimensions_map=dimensions,
                statistic="Sum",
                period=Duration.minutes(1),
            ),
            threshold=error_threshold,
            evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.latency_alarm = cloudwatch.Alarm(
            self,
            "ModelLatencyAlarm",
            alarm_description="codetune endpoint p90 model latency too high (rolls back)",
            metric=cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="ModelLatency",
                dimensions_map=dimensions,
                statistic="p90",
                period=Duration.minutes(1),
            ),
            threshold=latency_threshold_microseconds,
            evaluation_periods=3,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarms = [self.errors_alarm, self.latency_alarm]
        self.alarm_names = [a.alarm_name for a in self.alarms]


class TimedOutExecutions(Construct):
    """An EventBridge rule publishing to `topic` when an execution of the state machine hits
    the machine's own timeout: no Catch runs then, so NotifyFailure never does. (Failed
    executions are not matched: NotifyFailure has reported them.)"""

    def __init__(
        self, scope: Construct, construct_id: str, *, state_machine_arn: str, topic: sns.ITopic
    ) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "Rule",
            description="codetune: an execution timed out (no step's Catch ran)",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"status": ["TIMED_OUT"], "stateMachineArn": [state_machine_arn]},
            ),
        )
        name = events.EventField.from_path("$.detail.name")
        arn = events.EventField.from_path("$.detail.executionArn")
        self.rule.add_target(
            targets.SnsTopic(
                topic,
                message=events.RuleTargetInput.from_text(
                    f"codetune run {name} timed out: the state machine's timeout ended it "
                    f"before any step failed, so no failure was reported. Execution: {arn}"
                ),
            )
        )
