"""cdk-nag 3.x acknowledgements and checkov skips: one call per exact finding, with its reason,
next to the construct."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one exact cdk-nag finding (e.g. ``AwsSolutions-IAM5[Resource::*]``) on `construct`."""
    Validations.of(construct).acknowledge(Acknowledgment(id=finding, reason=reason))


def checkov_skip(construct: IConstruct, check_id: str, reason: str) -> None:
    """Record a checkov skip (``Metadata.checkov.skip``) of ``check_id`` on the construct's
    CloudFormation resource, with the one-line reason checkov prints."""
    cfn = construct if isinstance(construct, CfnResource) else construct.node.default_child
    metadata = cfn.get_metadata("checkov") or {"skip": []}
    metadata["skip"] = [*metadata["skip"], {"id": check_id, "comment": reason}]
    cfn.add_metadata("checkov", metadata)
