"""Render CloudFormation intrinsics in a synthesized template into realistic values.

The state machine definition is an `Fn::Join` of strings, `Ref`s, `Fn::GetAtt`s and
`Fn::Sub`s; cfn-lint, asl-validator and moto need the plain JSON a deployed stack would hold.
Each resource gets the ARN/name shape CloudFormation would give it in ACCOUNT/REGION.
"""

from __future__ import annotations

import json
import re
from typing import Any

ACCOUNT = "123456789012"
REGION = "eu-west-1"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "CodetuneDevStack",
}


def _name(logical_id: str) -> str:
    return f"codetune-{logical_id.lower()[:40]}"


def ref(template: dict, logical_id: str) -> str:
    """What `Ref` returns for a resource (its name, or ARN for the types that return one)."""
    if logical_id in PSEUDO:
        return PSEUDO[logical_id]
    if logical_id in template.get("Parameters", {}):
        return template["Parameters"][logical_id].get("Default", "param")
    rtype = template["Resources"][logical_id]["Type"]
    if rtype in ("AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"):
        return get_att(template, logical_id, "Arn")
    if rtype == "AWS::KMS::Key":
        return "1234abcd-12ab-34cd-56ef-1234567890ab"
    return _name(logical_id)


def get_att(template: dict, logical_id: str, attribute: str) -> str:
    """What `Fn::GetAtt` returns for the attributes the stack uses."""
    rtype = template["Resources"][logical_id]["Type"]
    name = _name(logical_id)
    arns = {
        "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
        "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}",
        "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
        "AWS::StepFunctions::StateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}",
        "AWS::CloudWatch::Alarm": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
    }
    if attribute == "Arn" and rtype in arns:
        return arns[rtype]
    raise KeyError(f"no rendering for {rtype}.{attribute}")


def resolve(template: dict, node: Any) -> Any:
    """Resolve intrinsics in `node` recursively."""
    if isinstance(node, list):
        return [resolve(template, x) for x in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref":
            return ref(template, value)
        if key == "Fn::GetAtt":
            return get_att(template, *value)
        if key == "Fn::Join":
            sep, parts = value
            return sep.join(str(resolve(template, p)) for p in parts)
        if key == "Fn::Sub":
            text = value if isinstance(value, str) else value[0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: _sub(template, m.group(1)), text)
    return {k: resolve(template, v) for k, v in node.items()}


def _sub(template: dict, expr: str) -> str:
    if "." in expr and not expr.startswith("AWS::"):
        logical_id, attribute = expr.split(".", 1)
        return get_att(template, logical_id, attribute)
    return ref(template, expr)


TRAINING = "Workflow"  # construct id of the training state machine (cdk/stack.py)
BATCH = "BatchInference"  # construct id of the batch inference state machine


def state_machine_id(template: dict, construct: str = TRAINING) -> str:
    """Logical id of the state machine of construct ``construct``."""
    (sm,) = [
        k
        for k, v in template["Resources"].items()
        if v["Type"] == "AWS::StepFunctions::StateMachine"
        and k.startswith(f"{construct}StateMachine")
    ]
    return sm


def rendered_definition(template: dict, construct: str = TRAINING) -> dict:
    """The state machine definition as deployed: plain ASL JSON."""
    props = template["Resources"][state_machine_id(template, construct)]["Properties"]
    return json.loads(resolve(template, props["DefinitionString"]))


def template_with_rendered_definition(template: dict) -> dict:
    """A copy of the template whose state machines have `Definition` (object) instead of the
    joined `DefinitionString`, so cfn-lint validates the states themselves."""
    out = json.loads(json.dumps(template))
    for construct in (TRAINING, BATCH):
        props = out["Resources"][state_machine_id(out, construct)]["Properties"]
        props["Definition"] = rendered_definition(template, construct)
        del props["DefinitionString"]
    return out
