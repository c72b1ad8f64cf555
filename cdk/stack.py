"""The one stack: creates the constructs and wires them together (grants happen here)."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from cdk.config import StageConfig
from cdk.constructs.storage import ArtifactStorage, EncryptionKey


class CodetuneStack(Stack):
    """Fine-tuning pipeline: storage, images, roles, glue Lambdas, workflow, alarms."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        key = EncryptionKey(self, "Encryption", retain=config.retain_data).key
        storage = ArtifactStorage(
            self,
            "Storage",
            key=key,
            retain=config.retain_data,
            checkpoint_expiry_days=config.checkpoint_expiry_days,
            dataset_expiry_days=config.dataset_expiry_days,
            noncurrent_version_expiry_days=config.noncurrent_version_expiry_days,
            access_log_expiry_days=config.access_log_expiry_days,
            create_input_bucket=config.create_input_bucket,
        )
        self.key = key
        self.storage = storage
        CfnOutput(self, "ArtifactBucketName", value=storage.artifact_bucket.bucket_name)
