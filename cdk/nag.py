"""cdk-nag 3.x acknowledgements: one call per exact finding, with its reason, next to the construct."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one exact cdk-nag finding (e.g. ``AwsSolutions-IAM5[Resource::*]``) on `construct`."""
    Validations.of(construct).acknowledge(Acknowledgment(id=finding, reason=reason))
