"""Encryption key and buckets: where codebases, datasets, checkpoints and adapters live."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import CHECKPOINTS_PREFIX, DATASETS_PREFIX, RUNS_PREFIX
from cdk.nag import acknowledge, checkov_skip


class EncryptionKey(Construct):
    """The stack's customer-managed KMS key (rotated yearly); everything at rest uses it."""

    def __init__(self, scope: Construct, construct_id: str, *, retain: bool) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="codetune: buckets, SageMaker volumes/outputs, endpoint, logs, SNS",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
            pending_window=Duration.days(7) if not retain else Duration.days(30),
        )
        # CloudWatch Logs encrypts the Lambda and workflow log groups of this account/region.
        stack = Stack.of(self)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                    "kms:GenerateDataKey",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:DescribeKey",
                ],
                resources=["*"],  # in a key policy "*" means this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )


class ArtifactStorage(Construct):
    """Artifact bucket (runs, datasets, checkpoints), its access-log bucket, optional input bucket."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        retain: bool,
        checkpoint_expiry_days: int,
        dataset_expiry_days: int,
        noncurrent_version_expiry_days: int,
        access_log_expiry_days: int,
        create_input_bucket: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        self.log_bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            # S3 server access logging can only deliver to SSE-S3 buckets, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # versioned: an overwritten or deleted log stays recoverable until it expires
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(access_log_expiry_days),
                    noncurrent_version_expiration=Duration.days(noncurrent_version_expiry_days),
                )
            ],
            removal_policy=removal,
            auto_delete_objects=False,
        )
        acknowledge(
            self.log_bucket,
            "AwsSolutions-S1",
            "This is the access-log target bucket; logging it into itself would loop.",
        )
        checkov_skip(
            self.log_bucket,
            "CKV_AWS_18",
            "This is the access-log target bucket; logging it into itself would loop.",
        )
        self.artifact_bucket = s3.Bucket(
            self,
            "ArtifactBucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="artifact-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireCheckpoints",
                    prefix=CHECKPOINTS_PREFIX,
                    expiration=Duration.days(checkpoint_expiry_days),
                ),
                s3.LifecycleRule(
                    id="ExpireDatasets",
                    prefix=DATASETS_PREFIX,
                    expiration=Duration.days(dataset_expiry_days),
                ),
                s3.LifecycleRule(
                    id="ExpireOldVersions",
                    noncurrent_version_expiration=Duration.days(noncurrent_version_expiry_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                    expired_object_delete_marker=True,
                ),
            ],
            removal_policy=removal,
        )
        self.runs_prefix = RUNS_PREFIX
        self.input_bucket: s3.Bucket | None = None
        if create_input_bucket:
            self.input_bucket = s3.Bucket(
                self,
                "InputBucket",
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.log_bucket,
                server_access_logs_prefix="input-bucket/",
                lifecycle_rules=[
                    s3.LifecycleRule(
                        noncurrent_version_expiration=Duration.days(noncurrent_version_expiry_days),
                        abort_incomplete_multipart_upload_after=Duration.days(1),
                    )
                ],
                removal_policy=removal,
            )
