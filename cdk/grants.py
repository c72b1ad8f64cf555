"""Exact IAM grants: named actions (no `s3:GetObject*`-style wildcards) on key prefixes.

CDK's `grant_read`/`grant_read_write` add wildcard action groups (`s3:List*`, `s3:Abort*`,
`kms:ReEncrypt*`); these helpers name exactly what the code calls.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3

from cdk.nag import acknowledge

READ_OBJECTS = ("s3:GetObject",)
WRITE_OBJECTS = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")


def allow_objects(
    grantee: iam.IGrantable, bucket: s3.Bucket, prefix: str | None, *, write: bool, reason: str
) -> None:
    """Read (and with `write`, put/delete) objects under `prefix` (None = whole bucket).

    Acknowledges the resulting cdk-nag finding (the object ARN ends in `*` by nature) on the
    grantee's policy with `reason`.
    """
    actions = [*READ_OBJECTS, *(WRITE_OBJECTS if write else ())]
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=actions,
        resource_arns=[bucket.arn_for_objects(f"{prefix}*" if prefix else "*")],
    )
    list_statement = iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
    if prefix:
        list_statement.add_condition("StringLike", {"s3:prefix": [f"{prefix}*"]})
    grantee.grant_principal.add_to_principal_policy(list_statement)
    role = grantee.grant_principal
    logical_id = Stack.of(bucket).get_logical_id(bucket.node.default_child)
    acknowledge(
        role.node.find_child("DefaultPolicy"),
        f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{prefix or ''}*]",
        reason,
    )


def allow_put(grantee: iam.IGrantable, bucket: s3.Bucket, pattern: str, *, reason: str) -> None:
    """Upload objects matching ``pattern`` (a key with ``*``); no reads, no deletes."""
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:PutObject", "s3:AbortMultipartUpload"],
        resource_arns=[bucket.arn_for_objects(pattern)],
    )
    logical_id = Stack.of(bucket).get_logical_id(bucket.node.default_child)
    acknowledge(
        grantee.grant_principal.node.find_child("DefaultPolicy"),
        f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{pattern}]",
        reason,
    )


def allow_key(grantee: iam.IGrantable, key: kms.IKey, *, encrypt: bool) -> None:
    """Decrypt with `key` (and with `encrypt`, encrypt/generate data keys)."""
    actions = ["kms:Decrypt", "kms:DescribeKey"]
    if encrypt:
        actions += ["kms:Encrypt", "kms:GenerateDataKey"]
    iam.Grant.add_to_principal(grantee=grantee, actions=actions, resource_arns=[key.key_arn])
