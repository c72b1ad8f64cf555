"""Execution roles that SageMaker assumes: one for jobs, one for the endpoint."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.grants import allow_key
from cdk.nag import acknowledge

SAGEMAKER = iam.ServicePrincipal("sagemaker.amazonaws.com")


def _log_groups(stack: Stack, *names: str) -> list[str]:
    return [
        stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for name in names
    ]


class SageMakerRoles(Construct):
    """`job_role` (prepare + training jobs), `evaluation_role` (the evaluation job, which runs
    generated code) and `endpoint_role` (the hosted model).

    Permissions are exact: run prefixes of the artifact bucket, the stack's key, the image
    repositories, and SageMaker's own log groups. Grants to buckets happen in the stack.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        repositories: list[ecr.IRepository],
        vpc_subnet_ids: tuple[str, ...],
        vpc_security_group_ids: tuple[str, ...],
        rollback_alarm_arns: list[str],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.job_role = _sagemaker_role(
            self, "JobRole", "codetune SageMaker processing and training jobs"
        )
        self.evaluation_role = _sagemaker_role(
            self, "EvaluationRole", "codetune SageMaker evaluation job (runs generated code)"
        )
        self.endpoint_role = _sagemaker_role(
            self, "EndpointRole", "codetune SageMaker endpoint (model container)"
        )
        # Each role writes to SageMaker's own log groups for what it runs.
        log_groups = {
            self.job_role: ("ProcessingJobs", "TrainingJobs"),
            self.evaluation_role: ("ProcessingJobs",),
            # an endpoint of inference components logs per component, not per endpoint
            self.endpoint_role: ("Endpoints/*", "InferenceComponents/*"),
        }
        for role, groups in log_groups.items():
            _allow_container_basics(
                stack,
                role,
                key=key,
                repositories=repositories,
                log_groups=groups,
                encrypts_volumes=role is not self.endpoint_role,
            )
        # Deployment guardrails: SageMaker reads the rollback alarms as the endpoint's role.
        self.endpoint_role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"], resources=rollback_alarm_arns
            )
        )
        if vpc_subnet_ids:
            for role in log_groups:
                allow_vpc_interfaces(stack, role, vpc_subnet_ids, vpc_security_group_ids)
            for role in log_groups:
                acknowledge(
                    role.node.find_child("DefaultPolicy"),
                    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:"
                    "<AWS::AccountId>:network-interface/*]",
                    "SageMaker creates the ENIs with generated ids in the configured subnets.",
                )
        for role, groups in log_groups.items():
            _acknowledge_wildcards(role, groups, in_vpc=bool(vpc_subnet_ids))


def _sagemaker_role(scope: Construct, construct_id: str, description: str) -> iam.Role:
    return iam.Role(scope, construct_id, assumed_by=SAGEMAKER, description=description)


def _allow_container_basics(
    stack: Stack,
    role: iam.Role,
    *,
    key: kms.IKey,
    repositories: list[ecr.IRepository],
    log_groups: tuple[str, ...],
    encrypts_volumes: bool,
) -> None:
    """What every SageMaker container needs: the stack's key, the images, its log groups
    under /aws/sagemaker/, and SageMaker's own metrics."""
    allow_key(role, key, encrypt=True)
    if encrypts_volumes:
        # Volume encryption with VolumeKmsKeyId: SageMaker creates a grant on the key
        # for the job's instances (CreateProcessingJob/CreateTrainingJob docs).
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:CreateGrant"],
                resources=[key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": True}},
            )
        )
    for repository in repositories:
        repository.grant_pull(role)
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
            ],
            resources=_log_groups(stack, *(f"/aws/sagemaker/{g}" for g in log_groups)),
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],  # PutMetricData has no resource type; namespace-scoped
            conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
        )
    )


def allow_vpc_interfaces(
    stack: Stack,
    role: iam.Role,
    subnet_ids: tuple[str, ...],
    security_group_ids: tuple[str, ...],
) -> None:
    """Jobs and the endpoint in a VPC: SageMaker creates ENIs in the subnets/groups."""
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeVpcs",
                "ec2:DescribeDhcpOptions",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
            ],
            resources=["*"],  # Describe* actions have no resource-level permissions
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "ec2:CreateNetworkInterface",
                "ec2:CreateNetworkInterfacePermission",
                "ec2:DeleteNetworkInterface",
                "ec2:DeleteNetworkInterfacePermission",
            ],
            resources=[
                stack.format_arn(service="ec2", resource="network-interface", resource_name="*"),
                *(
                    stack.format_arn(service="ec2", resource="subnet", resource_name=s)
                    for s in subnet_ids
                ),
                *(
                    stack.format_arn(service="ec2", resource="security-group", resource_name=g)
                    for g in security_group_ids
                ),
            ],
        )
    )


def _acknowledge_wildcards(role: iam.Role, log_groups: tuple[str, ...], *, in_vpc: bool) -> None:
    policy = role.node.find_child("DefaultPolicy")
    for group in log_groups:
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/{group}:*]",
            "SageMaker names one log stream per job/instance inside its fixed log group.",
        )
    acknowledge(
        policy,
        "AwsSolutions-IAM5[Resource::*]",
        "cloudwatch:PutMetricData has no resource type; limited by a namespace condition"
        + ("; ec2:Describe* have no resource-level permissions" if in_vpc else "")
        + "; ecr:GetAuthorizationToken is account-wide by design.",
    )
