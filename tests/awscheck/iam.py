"""Evaluate AWS calls against the IAM policies of a synthesized template.

A call (``record.Call``: service, operation, parameters) becomes one or more ``Need``s — the
IAM action, the resource ARN and the request context AWS evaluates (``REQUESTS``; SSE-KMS
buckets add the KMS actions S3 performs as the caller). Calls AWS services make on a role's
behalf are derived from the requests that cause them (``service_side``), each rule citing the
AWS page it comes from. ``missing()`` evaluates every need against the policies attached to
the principal's role: explicit Deny wins, an Allow must match action (wildcards), resource
(wildcards) and every condition (operators the stack uses; a key absent from the request
context fails the condition, as in IAM).
"""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from render import ACCOUNT, REGION, get_att, resolve

SM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
LOGS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group"


@dataclass(frozen=True)
class Need:
    """One IAM authorization AWS makes: ``action`` on ``resource`` with ``context`` keys."""

    principal: str  # a role's logical id in the template
    action: str
    resource: str
    context: tuple[tuple[str, Any], ...] = ()
    why: str = ""  # the call or service-side rule that needs it

    def __str__(self) -> str:
        ctx = f" with {dict(self.context)}" if self.context else ""
        return f"{self.principal} lacks {self.action} on {self.resource}{ctx} ({self.why})"


# -- the template's principals and policies ---------------------------------------------------


@dataclass
class Policies:
    """Statements per role logical id, with intrinsics rendered (render.resolve)."""

    template: dict
    statements: dict[str, list[dict]] = field(default_factory=dict)
    kms_buckets: dict[str, str] = field(default_factory=dict)  # bucket name -> key ARN

    @classmethod
    def of(cls, template: dict) -> Policies:
        out = cls(template)
        resources = template["Resources"]
        for rid, res in resources.items():
            if res["Type"] == "AWS::IAM::Role":
                out.statements.setdefault(rid, [])
                for inline in res["Properties"].get("Policies", []):
                    out.statements[rid] += resolve(template, inline["PolicyDocument"])["Statement"]
                assert not res["Properties"].get("ManagedPolicyArns"), f"{rid}: managed policies"
        for res in resources.values():
            if res["Type"] == "AWS::IAM::Policy":
                doc = resolve(template, res["Properties"]["PolicyDocument"])
                for role in res["Properties"].get("Roles", []):
                    out.statements.setdefault(role["Ref"], []).extend(doc["Statement"])
        for rid, res in resources.items():
            if res["Type"] != "AWS::S3::Bucket":
                continue
            enc = res["Properties"].get("BucketEncryption", {})
            for rule in enc.get("ServerSideEncryptionConfiguration", []):
                default = rule.get("ServerSideEncryptionByDefault", {})
                if default.get("SSEAlgorithm") == "aws:kms":
                    out.kms_buckets[resolve(template, {"Ref": rid})] = resolve(
                        template, default["KMSMasterKeyID"]
                    )
        return out

    def role_of_arn(self, arn: str) -> str:
        """The logical id of the role whose rendered ARN is ``arn``."""
        for rid in self.statements:
            if get_att(self.template, rid, "Arn") == arn:
                return rid
        raise KeyError(f"no role in the template has ARN {arn}")

    def role_of_function(self, handler: str) -> str:
        """The logical id of the execution role of the Lambda whose id contains ``handler``."""
        for rid, res in self.template["Resources"].items():
            if res["Type"] == "AWS::Lambda::Function" and handler.replace("_", "") in rid.lower():
                return res["Properties"]["Role"]["Fn::GetAtt"][0]
        raise KeyError(f"no Lambda for handler {handler}")

    def state_machine_role(self, construct: str = "Workflow") -> str:
        """The role of the state machine of construct ``construct`` (render.TRAINING/BATCH)."""
        from render import state_machine_id

        sm = self.template["Resources"][state_machine_id(self.template, construct)]
        return sm["Properties"]["RoleArn"]["Fn::GetAtt"][0]

    def allows(self, need: Need) -> bool:
        statements = self.statements.get(need.principal)
        if statements is None:
            raise KeyError(f"{need.principal} is not a role of the template")
        ctx = dict(need.context)
        matching = [s for s in statements if _applies(s, need.action, need.resource, ctx)]
        if any(s["Effect"] == "Deny" for s in matching):
            return False
        return any(s["Effect"] == "Allow" for s in matching)


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def _like(pattern: str, value: str, *, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _applies(st: dict, action: str, resource: str, ctx: dict) -> bool:
    assert "NotAction" not in st and "NotResource" not in st, st  # unused by the stack
    if not any(_like(a, action, case=False) for a in _as_list(st["Action"])):
        return False
    if not any(_like(r, resource) for r in _as_list(st.get("Resource", "*"))):
        return False
    return all(
        _condition(op, key, _as_list(values), ctx)
        for op, block in st.get("Condition", {}).items()
        for key, values in block.items()
    )


def _condition(op: str, key: str, values: list, ctx: dict) -> bool:
    if_exists = op.endswith("IfExists")
    base = op.removesuffix("IfExists")
    if key not in ctx:
        return if_exists
    given = [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(ctx[key])]
    values = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    tests = {
        "StringEquals": lambda g, v: g == v,
        "StringLike": lambda g, v: _like(v, g),
        "ArnEquals": lambda g, v: g == v,
        "ArnLike": lambda g, v: _like(v, g),
        "Bool": lambda g, v: g == v,
    }
    if base not in tests:
        raise NotImplementedError(f"condition operator {op} (add it to awscheck.iam)")
    return all(any(tests[base](g, v) for v in values) for g in given)


# -- what a recorded call needs ---------------------------------------------------------------


def _obj(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _autoscaling(operation: str, params: dict) -> list[tuple[str, str, dict]]:
    # scalable targets and policies have no resource-level permissions
    return [(f"application-autoscaling:{operation}", "*", {})]


Rule = Callable[[dict], list[tuple[str, str, dict]]]  # params -> [(action, resource, context)]

REQUESTS: dict[tuple[str, str], Rule] = {
    ("s3", "ListObjectsV2"): lambda p: [
        ("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}", {"s3:prefix": p.get("Prefix", "")})
    ],
    ("s3", "GetObject"): lambda p: [("s3:GetObject", _obj(p["Bucket"], p["Key"]), {})],
    ("s3", "HeadObject"): lambda p: [("s3:GetObject", _obj(p["Bucket"], p["Key"]), {})],
    ("s3", "PutObject"): lambda p: [("s3:PutObject", _obj(p["Bucket"], p["Key"]), {})],
    ("sagemaker", "DescribeModelPackageGroup"): lambda p: [
        (
            "sagemaker:DescribeModelPackageGroup",
            f"{SM}:model-package-group/{p['ModelPackageGroupName']}",
            {},
        )
    ],
    ("sagemaker", "ListModelPackages"): lambda p: [
        (
            "sagemaker:ListModelPackages",
            f"{SM}:model-package-group/{p['ModelPackageGroupName']}",
            {},
        )
    ],
    ("sagemaker", "DescribeModelPackage"): lambda p: [
        ("sagemaker:DescribeModelPackage", p["ModelPackageName"], {})
    ],
    ("sagemaker", "CreateModelPackage"): lambda p: [
        # the new version's ARN: <group>/<version>
        ("sagemaker:CreateModelPackage", f"{SM}:model-package/{p['ModelPackageGroupName']}/1", {})
    ],
    ("sagemaker", "DescribeModel"): lambda p: [
        ("sagemaker:DescribeModel", f"{SM}:model/{p['ModelName']}", {})
    ],
    ("sagemaker", "CreateModel"): lambda p: [
        ("sagemaker:CreateModel", f"{SM}:model/{p['ModelName']}", {}),
        *_tags(p, f"{SM}:model/{p['ModelName']}"),
        (
            "iam:PassRole",
            p["ExecutionRoleArn"],
            {"iam:PassedToService": "sagemaker.amazonaws.com"},
        ),
    ],
    ("sagemaker", "DescribeEndpointConfig"): lambda p: [
        ("sagemaker:DescribeEndpointConfig", f"{SM}:endpoint-config/{p['EndpointConfigName']}", {})
    ],
    ("sagemaker", "CreateEndpointConfig"): lambda p: [
        ("sagemaker:CreateEndpointConfig", f"{SM}:endpoint-config/{p['EndpointConfigName']}", {}),
        *_tags(p, f"{SM}:endpoint-config/{p['EndpointConfigName']}"),
        # API_CreateEndpointConfig, KmsKeyId: "the caller needs kms:CreateGrant"
        *([("kms:CreateGrant", p["KmsKeyId"], {})] if "KmsKeyId" in p else []),
        # ExecutionRoleArn (endpoints of inference components) is passed to SageMaker
        *(
            [
                (
                    "iam:PassRole",
                    p["ExecutionRoleArn"],
                    {"iam:PassedToService": "sagemaker.amazonaws.com"},
                )
            ]
            if "ExecutionRoleArn" in p
            else []
        ),
    ],
    ("sagemaker", "CreateInferenceComponent"): lambda p: [
        ("sagemaker:CreateInferenceComponent", _ic(p), {}),
        ("sagemaker:CreateInferenceComponent", f"{SM}:endpoint/{p['EndpointName']}", {}),
        *_tags(p, _ic(p)),
    ],
    ("sagemaker", "DescribeInferenceComponent"): lambda p: [
        ("sagemaker:DescribeInferenceComponent", _ic(p), {})
    ],
    ("sagemaker", "UpdateInferenceComponent"): lambda p: [
        ("sagemaker:UpdateInferenceComponent", _ic(p), {})
    ],
    ("sagemaker", "DeleteInferenceComponent"): lambda p: [
        ("sagemaker:DeleteInferenceComponent", _ic(p), {})
    ],
    # List* is not resource-scoped
    ("sagemaker", "ListInferenceComponents"): lambda p: [
        ("sagemaker:ListInferenceComponents", "*", {})
    ],
    ("cloudwatch", "PutMetricAlarm"): lambda p: [
        (
            "cloudwatch:PutMetricAlarm",
            f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{p['AlarmName']}",
            {},
        )
    ],
    ("sagemaker", "DescribeEndpoint"): lambda p: [
        ("sagemaker:DescribeEndpoint", f"{SM}:endpoint/{p['EndpointName']}", {})
    ],
    ("sagemaker", "CreateEndpoint"): lambda p: [
        ("sagemaker:CreateEndpoint", f"{SM}:endpoint/{p['EndpointName']}", {}),
        ("sagemaker:CreateEndpoint", f"{SM}:endpoint-config/{p['EndpointConfigName']}", {}),
        *_tags(p, f"{SM}:endpoint/{p['EndpointName']}"),
    ],
    ("sagemaker", "UpdateEndpoint"): lambda p: [
        ("sagemaker:UpdateEndpoint", f"{SM}:endpoint/{p['EndpointName']}", {}),
        ("sagemaker:UpdateEndpoint", f"{SM}:endpoint-config/{p['EndpointConfigName']}", {}),
    ],
    ("sagemaker", "DeleteEndpoint"): lambda p: [
        ("sagemaker:DeleteEndpoint", f"{SM}:endpoint/{p['EndpointName']}", {})
    ],
    ("sagemaker-runtime", "InvokeEndpoint"): lambda p: [
        ("sagemaker:InvokeEndpoint", f"{SM}:endpoint/{p['EndpointName']}", {}),
        # addressed to a component: authorized on the component as well
        *([("sagemaker:InvokeEndpoint", _ic(p), {})] if "InferenceComponentName" in p else []),
    ],
    ("ecr", "DescribeImages"): lambda p: [
        (
            "ecr:DescribeImages",
            f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{p['repositoryName']}",
            {},
        )
    ],
    ("sns", "Publish"): lambda p: [("sns:Publish", p["TopicArn"], {})],
    **{
        ("application-autoscaling", op): functools.partial(_autoscaling, op)
        for op in (
            "DescribeScalableTargets",
            "DescribeScalingPolicies",
            "RegisterScalableTarget",
            "PutScalingPolicy",
            "DeleteScalingPolicy",
            "DeregisterScalableTarget",
        )
    },
}


def _ic(params: dict) -> str:
    return f"{SM}:inference-component/{params['InferenceComponentName']}"


def _tags(params: dict, arn: str) -> list[tuple[str, str, dict]]:
    # Tags on a Create* call are authorized as sagemaker:AddTags on the new resource
    # (https://docs.aws.amazon.com/sagemaker/latest/dg/security_iam_id-based-policy-examples.html)
    return [("sagemaker:AddTags", arn, {})] if params.get("Tags") else []


def needs_of_call(policies: Policies, principal: str, service: str, operation: str, params: dict, why: str) -> list[Need]:  # fmt: skip
    """What one API call needs from ``principal`` (a role logical id)."""
    rule = REQUESTS.get((service, operation))
    if rule is None:
        raise KeyError(f"no IAM mapping for {service}.{operation}: add it to awscheck.iam.REQUESTS")
    out = [Need(principal, a, r, tuple(sorted(c.items())), why) for a, r, c in rule(params)]
    out += _sse_kms(policies, principal, service, operation, params, why)
    return out


def _sse_kms(policies, principal, service, operation, params, why) -> list[Need]:
    # SSE-KMS: S3 calls KMS as the requester ("Permissions to use an AWS KMS key for SSE-KMS",
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#require-sse-kms)
    if service != "s3" or params.get("Bucket") not in policies.kms_buckets:
        return []
    key = policies.kms_buckets[params["Bucket"]]
    action = {
        "GetObject": "kms:Decrypt",
        "HeadObject": "kms:Decrypt",
        "PutObject": "kms:GenerateDataKey",
    }
    return [Need(principal, action[operation], key, (), why)] if operation in action else []


# -- calls AWS makes on a role's behalf -------------------------------------------------------

SFN_SAGEMAKER = "https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html"
SFN_LAMBDA = "https://docs.aws.amazon.com/step-functions/latest/dg/lambda-iam.html"
SM_ROLES = "https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html"
SM_VPC = "https://docs.aws.amazon.com/sagemaker/latest/dg/train-vpc.html"
SM_KMS = "https://docs.aws.amazon.com/sagemaker/latest/dg/encryption-at-rest-nbi.html"
SM_AUTOSCALING = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-prerequisites.html"
)
SM_GUARDRAILS = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html"
)
SM_COMPONENTS = "https://docs.aws.amazon.com/sagemaker/latest/dg/realtime-endpoints-adapt.html"
ECR_PULL = "https://docs.aws.amazon.com/AmazonECR/latest/userguide/repository-policy-examples.html"

# (service, operation) -> (doc page, what AWS does). The functions below derive the needs.
SERVICE_SIDE: dict[str, tuple[str, str]] = {
    "sfn.createTrainingJob.sync": (
        SFN_SAGEMAKER,
        "Step Functions calls CreateTrainingJob, DescribeTrainingJob, StopTrainingJob, AddTags,"
        " ListTags, iam:PassRole and manages the StepFunctionsGetEventsForSageMakerTrainingJobsRule",
    ),
    "sfn.createProcessingJob.sync": (SFN_SAGEMAKER, "the same for processing jobs"),
    "sfn.createHyperParameterTuningJob.sync": (
        SFN_SAGEMAKER,
        "Step Functions calls CreateHyperParameterTuningJob, DescribeHyperParameterTuningJob,"
        " StopHyperParameterTuningJob, ListTags (AddTags with tags), iam:PassRole for the"
        " trials' role and manages the StepFunctionsGetEventsForSageMakerTuningJobsRule",
    ),
    "sagemaker.tuning.trials": (
        "https://docs.aws.amazon.com/sagemaker/latest/dg/automatic-model-tuning-ex-role.html",
        "each trial is a training job <tuning job>-<nnn>-<hash> run with the definition's role",
    ),
    "sfn.lambda.invoke": (SFN_LAMBDA, "Step Functions calls lambda:InvokeFunction"),
    "sagemaker.job.inputs": (SM_ROLES, "the job role reads every S3 input (ListBucket, GetObject)"),
    "sagemaker.job.outputs": (SM_ROLES, "the job role uploads outputs (PutObject)"),
    "sagemaker.job.kms": (
        SM_ROLES,
        "output KmsKeyId: kms:Encrypt/GenerateDataKey; VolumeKmsKeyId: kms:CreateGrant (GrantIsForAWSResource)",
    ),
    "sagemaker.job.ecr": (
        SM_ROLES,
        "the job role pulls the image (GetAuthorizationToken, BatchCheckLayerAvailability, GetDownloadUrlForLayer, BatchGetImage)",
    ),
    "sagemaker.job.logs": (
        SM_ROLES,
        "CloudWatch Logs: CreateLogGroup, CreateLogStream, PutLogEvents, DescribeLogStreams; cloudwatch:PutMetricData",
    ),
    "sagemaker.job.vpc": (
        SM_VPC,
        "ENIs in the job's subnets: ec2 Create/Delete NetworkInterface(+Permission), Describe*",
    ),
    "sagemaker.endpoint.model": (
        SM_ROLES,
        "the endpoint role reads ModelDataUrl, pulls the image, writes logs and metrics",
    ),
    "sagemaker.endpoint.components": (
        SM_COMPONENTS,
        "the endpoint config's execution role downloads each adapter component's ArtifactUrl"
        " and writes the components' logs (/aws/sagemaker/InferenceComponents/<name>)",
    ),
    "sagemaker.endpoint.rollback": (
        SM_GUARDRAILS,
        "the endpoint role reads the rollback alarms (cloudwatch:DescribeAlarms)",
    ),
    "sfn.createModel": (
        SFN_SAGEMAKER,
        "Step Functions calls CreateModel (and AddTags for its Tags) and iam:PassRole of the "
        "model's execution role; the model package is read as the caller",
    ),
    "sfn.createTransformJob.sync": (
        SFN_SAGEMAKER,
        "Step Functions calls CreateTransformJob, DescribeTransformJob, StopTransformJob, AddTags,"
        " ListTags and manages the StepFunctionsGetEventsForSageMakerTransformJobsRule",
    ),
    "sagemaker.transform.model": (
        SM_ROLES,
        "the model's role reads the input prefix and the model data, writes <input>.out under "
        "S3OutputPath (KmsKeyId: Encrypt/GenerateDataKey), pulls the image, writes logs; "
        "VolumeKmsKeyId: kms:CreateGrant (GrantIsForAWSResource)",
    ),
    "autoscaling.caller": (
        SM_AUTOSCALING,
        "Application Auto Scaling checks sagemaker:DescribeEndpoint, UpdateEndpointWeightsAndCapacities"
        " (an inference component: DescribeInferenceComponent, UpdateInferenceComponentRuntimeConfig)"
        " and cloudwatch alarms as the caller",
    ),
}


def _rule(name: str) -> str:
    return f"{name} ({SERVICE_SIDE[name][0]})"


def _s3_reads(role: str, uri: str, why: str) -> list[Need]:
    bucket, prefix = _split(uri)
    key = prefix + "object" if prefix.endswith("/") or not prefix else prefix
    return [
        Need(role, "s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", prefix),), why),
        Need(role, "s3:GetObject", _obj(bucket, key), (), why),
    ]


def _kms_for_bucket(policies: Policies, role: str, uri: str, action: str, why: str) -> list[Need]:
    bucket, _ = _split(uri)
    key = policies.kms_buckets.get(bucket)
    return [Need(role, action, key, (), why)] if key else []


def _ecr_pull(role: str, image: str, why: str) -> list[Need]:
    host, _, rest = image.partition("/")
    repo = rest.split("@")[0].split(":")[0]
    region = host.split(".")[3]
    arn = f"arn:aws:ecr:{region}:{host.split('.')[0]}:repository/{repo}"
    return [Need(role, "ecr:GetAuthorizationToken", "*", (), why)] + [
        Need(role, a, arn, (), why)
        for a in (
            "ecr:BatchCheckLayerAvailability",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchGetImage",
        )
    ]


def _logs(role: str, group: str, stream: str, namespace: str, why: str) -> list[Need]:
    stream_arn = f"{LOGS}:{group}:log-stream:{stream}"
    return [
        Need(role, "logs:CreateLogGroup", f"{LOGS}:{group}:*", (), why),
        *(
            Need(role, a, stream_arn, (), why)
            for a in ("logs:CreateLogStream", "logs:PutLogEvents")
        ),
        Need(role, "logs:DescribeLogStreams", f"{LOGS}:{group}:*", (), why),
        Need(role, "cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", namespace),), why),
    ]


def _vpc(role: str, vpc: dict | None, why: str) -> list[Need]:
    if not vpc:
        return []
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
    out = [
        Need(role, f"ec2:{a}", "*", (), why)
        for a in (
            "DescribeNetworkInterfaces",
            "DescribeVpcs",
            "DescribeDhcpOptions",
            "DescribeSubnets",
            "DescribeSecurityGroups",
        )
    ]
    for a in (
        "CreateNetworkInterface",
        "CreateNetworkInterfacePermission",
        "DeleteNetworkInterface",
        "DeleteNetworkInterfacePermission",
    ):
        out.append(
            Need(role, f"ec2:{a}", f"{ec2}:network-interface/eni-0123456789abcdef0", (), why)
        )
        out += [Need(role, f"ec2:{a}", f"{ec2}:subnet/{s}", (), why) for s in vpc["Subnets"]]
        out += [
            Need(role, f"ec2:{a}", f"{ec2}:security-group/{g}", (), why)
            for g in vpc["SecurityGroupIds"]
        ]
    return out


def job_needs(policies: Policies, kind: str, request: dict, *, state_machine: bool = True) -> list[Need]:  # fmt: skip
    """What running one CreateTrainingJob / CreateProcessingJob request needs, from the state
    machine's role (the .sync integration, unless ``state_machine`` is false: a job someone
    else started) and from the job's execution role."""
    sfn = policies.state_machine_role()
    role = policies.role_of_arn(request["RoleArn"])
    name = request[f"{kind}JobName"]
    rule = f"sfn.create{kind}Job.sync"
    job = f"{SM}:{kind.lower()}-job/{name}"
    why = _rule(rule)
    out = [
        Need(sfn, f"sagemaker:{a}", job, (), why)
        for a in (f"Create{kind}Job", f"Describe{kind}Job", f"Stop{kind}Job", "AddTags", "ListTags")
    ]
    out.append(
        Need(
            sfn,
            "iam:PassRole",
            request["RoleArn"],
            (("iam:PassedToService", "sagemaker.amazonaws.com"),),
            why,
        )
    )
    rule_arn = (
        f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForSageMaker{kind}JobsRule"
    )
    out += [
        Need(sfn, f"events:{a}", rule_arn, (), why)
        for a in ("PutTargets", "PutRule", "DescribeRule")
    ]
    if not state_machine:
        out = []

    if kind == "Training":
        image = request["AlgorithmSpecification"]["TrainingImage"]
        inputs = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]]
        outputs = [request["OutputDataConfig"]["S3OutputPath"] + name + "/output/model.tar.gz"]
        output_key = request["OutputDataConfig"].get("KmsKeyId")
        volume_key = request["ResourceConfig"].get("VolumeKmsKeyId")
        checkpoint = request.get("CheckpointConfig", {}).get("S3Uri")
        vpc = request.get("VpcConfig")
        group, namespace = "/aws/sagemaker/TrainingJobs", "/aws/sagemaker/TrainingJobs"
    else:
        image = request["AppSpecification"]["ImageUri"]
        inputs = [i["S3Input"]["S3Uri"] for i in request["ProcessingInputs"]]
        outs = request["ProcessingOutputConfig"]["Outputs"]
        outputs = [o["S3Output"]["S3Uri"].rstrip("/") + "/report.json" for o in outs]
        output_key = request["ProcessingOutputConfig"].get("KmsKeyId")
        volume_key = request["ProcessingResources"]["ClusterConfig"].get("VolumeKmsKeyId")
        checkpoint = None
        vpc = request.get("NetworkConfig", {}).get("VpcConfig")
        group, namespace = "/aws/sagemaker/ProcessingJobs", "/aws/sagemaker/ProcessingJobs"
    for uri in inputs:
        out += _s3_reads(role, uri, _rule("sagemaker.job.inputs"))
        out += _kms_for_bucket(policies, role, uri, "kms:Decrypt", _rule("sagemaker.job.inputs"))
    for uri in outputs:
        b, k = _split(uri)
        out.append(Need(role, "s3:PutObject", _obj(b, k), (), _rule("sagemaker.job.outputs")))
        out += _kms_for_bucket(
            policies, role, uri, "kms:GenerateDataKey", _rule("sagemaker.job.outputs")
        )
    if checkpoint:
        b, k = _split(checkpoint)
        why = _rule("sagemaker.job.outputs")
        out += _s3_reads(role, checkpoint, why)
        out += [
            Need(role, f"s3:{a}", _obj(b, k + "checkpoint-1/x"), (), why)
            for a in ("PutObject", "DeleteObject")
        ]
    if output_key:
        out += [
            Need(role, a, output_key, (), _rule("sagemaker.job.kms"))
            for a in ("kms:Encrypt", "kms:GenerateDataKey")
        ]
    if volume_key:
        out.append(
            Need(
                role,
                "kms:CreateGrant",
                volume_key,
                (("kms:GrantIsForAWSResource", True),),
                _rule("sagemaker.job.kms"),
            )
        )
    out += _ecr_pull(role, image, _rule("sagemaker.job.ecr"))
    out += _logs(role, group, f"{name}/algo-1-1700000000", namespace, _rule("sagemaker.job.logs"))
    out += _vpc(role, vpc, _rule("sagemaker.job.vpc"))
    return out


def tuning_needs(policies: Policies, request: dict) -> list[Need]:
    """What one CreateHyperParameterTuningJob request (a `.sync` task) needs: from the state
    machine's role, the tuning job's calls, and BestTrial's DescribeTrainingJob of a trial;
    from the trials' role, what a training job of the definition needs (``job_needs``)."""
    sfn = policies.state_machine_role()
    name = request["HyperParameterTuningJobName"]
    definition = request["TrainingJobDefinition"]
    why = _rule("sfn.createHyperParameterTuningJob.sync")
    arn = f"{SM}:hyper-parameter-tuning-job/{name}"
    actions = ["Create", "Describe", "Stop"]
    out = [Need(sfn, f"sagemaker:{a}HyperParameterTuningJob", arn, (), why) for a in actions]
    out.append(Need(sfn, "sagemaker:ListTags", arn, (), why))
    out += [Need(sfn, "sagemaker:AddTags", arn, (), why)] if request.get("Tags") else []
    out.append(
        Need(sfn, "iam:PassRole", definition["RoleArn"],
             (("iam:PassedToService", "sagemaker.amazonaws.com"),), why)
    )  # fmt: skip
    rule = (
        f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForSageMakerTuningJobsRule"
    )
    out += [
        Need(sfn, f"events:{a}", rule, (), why) for a in ("PutTargets", "PutRule", "DescribeRule")
    ]
    trial = {
        "TrainingJobName": f"{name}-001-0123abcd",
        "HyperParameters": definition.get("StaticHyperParameters", {}),
        **{k: v for k, v in definition.items() if k != "StaticHyperParameters"},
    }
    out.append(
        Need(sfn, "sagemaker:DescribeTrainingJob", f"{SM}:training-job/{trial['TrainingJobName']}",
             (), _rule("sagemaker.tuning.trials") + " (BestTrial)")
    )  # fmt: skip
    out += job_needs(policies, "Training", trial, state_machine=False)
    return out


def endpoint_needs(
    policies: Policies, create_model: dict, container: dict, update: dict | None, env: dict
) -> list[Need]:
    """What the endpoint role needs to host ``create_model``, whose ``container`` is its
    package's (a single-model endpoint) or its own (a component's base model: no model data)."""
    role = policies.role_of_arn(create_model["ExecutionRoleArn"])
    why = _rule("sagemaker.endpoint.model")
    out = []
    if container.get("ModelDataUrl"):
        out += _s3_reads(role, container["ModelDataUrl"], why)
        out += _kms_for_bucket(policies, role, container["ModelDataUrl"], "kms:Decrypt", why)
    base = container.get("Environment", {}).get("CODETUNE_BASE_MODEL", "")
    if base.startswith("s3://"):
        out += _s3_reads(role, base, why) + _kms_for_bucket(
            policies, role, base, "kms:Decrypt", why
        )
    out += _ecr_pull(role, container["Image"], why)
    endpoint = env["endpoint"]
    out += _logs(
        role,
        f"/aws/sagemaker/Endpoints/{endpoint}",
        "AllTraffic/i-0123456789abcdef0",
        "/aws/sagemaker/Endpoints",
        why,
    )
    out += _vpc(role, create_model.get("VpcConfig"), _rule("sagemaker.job.vpc"))
    if update:
        for alarm in (
            update.get("DeploymentConfig", {})
            .get("AutoRollbackConfiguration", {})
            .get("Alarms", [])
        ):
            arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm['AlarmName']}"
            out.append(
                Need(
                    role, "cloudwatch:DescribeAlarms", arn, (), _rule("sagemaker.endpoint.rollback")
                )
            )
    return out


def component_needs(policies: Policies, create_config: dict, components: list[dict]) -> list[Need]:
    """What the role of an endpoint of inference components (CreateEndpointConfig's
    ExecutionRoleArn) needs for the components created on it: each adapter's artifact read,
    each component's log group written."""
    role = policies.role_of_arn(create_config["ExecutionRoleArn"])
    why = _rule("sagemaker.endpoint.components")
    out: list[Need] = []
    for c in components:
        artifact = (c["Specification"].get("Container") or {}).get("ArtifactUrl")
        if artifact:
            out += _s3_reads(role, artifact, why)
            out += _kms_for_bucket(policies, role, artifact, "kms:Decrypt", why)
        out += _logs(
            role,
            f"/aws/sagemaker/InferenceComponents/{c['InferenceComponentName']}",
            "AllTraffic/i-0123456789abcdef0",
            "/aws/sagemaker/InferenceComponents",
            why,
        )
    out += _vpc(role, create_config.get("VpcConfig"), _rule("sagemaker.job.vpc"))
    return out


def autoscaling_needs(principal: str, call_params: dict, operation: str) -> list[Need]:
    """What Application Auto Scaling checks as the caller of Register/PutScalingPolicy."""
    if operation not in ("RegisterScalableTarget", "PutScalingPolicy"):
        return []
    why = _rule("autoscaling.caller")
    if call_params["ResourceId"].startswith("inference-component/"):
        component = call_params["ResourceId"].split("/", 1)[1]
        if operation == "RegisterScalableTarget":
            return [
                Need(principal, f"sagemaker:{a}", f"{SM}:inference-component/{component}", (), why)
                for a in ("DescribeInferenceComponent", "UpdateInferenceComponentRuntimeConfig")
            ]
        if call_params.get("PolicyType") != "TargetTrackingScaling":
            return []  # a step policy creates no alarm; its alarm is the caller's own
        alarm = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:TargetTracking-inference-component/{component}-AlarmHigh-0123"
        return [
            Need(principal, f"cloudwatch:{a}", alarm, (), why)
            for a in ("PutMetricAlarm", "DescribeAlarms", "DeleteAlarms")
        ]
    endpoint = call_params["ResourceId"].split("/")[1]
    if operation == "RegisterScalableTarget":
        return [
            Need(principal, f"sagemaker:{a}", f"{SM}:endpoint/{endpoint}", (), why)
            for a in ("DescribeEndpoint", "UpdateEndpointWeightsAndCapacities")
        ]
    if operation == "PutScalingPolicy":
        alarm = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:TargetTracking-endpoint/{endpoint}/variant/AllTraffic-AlarmHigh-0123"
        return [
            Need(principal, f"cloudwatch:{a}", alarm, (), why)
            for a in ("PutMetricAlarm", "DescribeAlarms", "DeleteAlarms")
        ]
    return []


def lambda_invoke_needs(
    policies: Policies, definition: dict, construct: str = "Workflow"
) -> list[Need]:
    """The state machine role invokes every function its Lambda Task states name."""
    sfn = policies.state_machine_role(construct)
    out = []
    for name, state in definition["States"].items():
        fn = (
            state.get("Parameters", {}).get("FunctionName") if state.get("Type") == "Task" else None
        )
        if fn and "lambda:invoke" in state["Resource"]:
            out.append(
                Need(sfn, "lambda:InvokeFunction", fn, (), _rule("sfn.lambda.invoke") + f" {name}")
            )
    return out


def missing(policies: Policies, needs: Iterable[Need]) -> list[str]:
    """Every need no policy of its principal allows, as readable lines (deduplicated)."""
    seen, out = set(), []
    for need in needs:
        key = (need.principal, need.action, need.resource, need.context)
        if key in seen:
            continue
        seen.add(key)
        if not policies.allows(need):
            out.append(str(need))
    return out


def describe(needs: Iterable[Need]) -> str:
    return json.dumps(sorted({(n.principal, n.action) for n in needs}), indent=1)


def transform_needs(
    policies: Policies,
    create_model: dict,
    transform: dict,
    package: dict,
    *,
    input_object: str,
    construct: str = "BatchInference",
) -> list[Need]:
    """What one CreateModel (from ``package``) + CreateTransformJob run needs: from the batch
    state machine's role (the two integrations) and from the model's execution role (what
    Batch Transform does with it). ``input_object``: a JSONL file under the input prefix."""
    sfn = policies.state_machine_role(construct)
    role = policies.role_of_arn(create_model["ExecutionRoleArn"])
    model = f"{SM}:model/{create_model['ModelName']}"
    job = f"{SM}:transform-job/{transform['TransformJobName']}"
    why_model, why_job = _rule("sfn.createModel"), _rule("sfn.createTransformJob.sync")
    out = [
        Need(sfn, a, model, (), why_model) for a in ("sagemaker:CreateModel", "sagemaker:AddTags")
    ]
    out.append(
        Need(sfn, "sagemaker:DescribeModelPackage", create_model["PrimaryContainer"]["ModelPackageName"], (), why_model)
    )  # fmt: skip
    out.append(
        Need(
            sfn,
            "iam:PassRole",
            create_model["ExecutionRoleArn"],
            (("iam:PassedToService", "sagemaker.amazonaws.com"),),
            why_model,
        )
    )
    out += [
        Need(sfn, f"sagemaker:{a}", job, (), why_job)
        for a in ("CreateTransformJob", "DescribeTransformJob", "StopTransformJob", "AddTags", "ListTags")
    ]  # fmt: skip
    rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForSageMakerTransformJobsRule"
    out += [Need(sfn, f"events:{a}", rule_arn, (), why_job) for a in ("PutTargets", "PutRule", "DescribeRule")]  # fmt: skip

    why = _rule("sagemaker.transform.model")
    container = package["InferenceSpecification"]["Containers"][0]
    source = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    source_object = source + input_object if source.endswith("/") else source
    for uri in (source_object, container["ModelDataUrl"]):  # each line file, model.tar.gz
        b, k = _split(uri)
        out.append(Need(role, "s3:GetObject", _obj(b, k), (), why))
        out += _kms_for_bucket(policies, role, uri, "kms:Decrypt", why)
    base = container.get("Environment", {}).get("CODETUNE_BASE_MODEL", "")
    if base.startswith("s3://"):  # the server loads an S3 base model with the model's role
        out += _s3_reads(role, base, why) + _kms_for_bucket(
            policies, role, base, "kms:Decrypt", why
        )
    bucket, prefix = _split(source)  # S3Prefix: SageMaker lists the objects under it
    out.append(Need(role, "s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", prefix),), why))
    answer = transform["TransformOutput"]["S3OutputPath"] + input_object.rsplit("/", 1)[-1] + ".out"
    b, k = _split(answer)
    out.append(Need(role, "s3:PutObject", _obj(b, k), (), why))
    out += _kms_for_bucket(policies, role, answer, "kms:GenerateDataKey", why)
    key = transform["TransformOutput"].get("KmsKeyId")
    if key:
        out += [Need(role, a, key, (), why) for a in ("kms:Encrypt", "kms:GenerateDataKey")]
    volume_key = transform["TransformResources"].get("VolumeKmsKeyId")
    if volume_key:
        out.append(
            Need(role, "kms:CreateGrant", volume_key, (("kms:GrantIsForAWSResource", True),), why)
        )
    out += _ecr_pull(role, container["Image"], why)
    out += _logs(
        role,
        "/aws/sagemaker/TransformJobs",
        f"{transform['TransformJobName']}/i-0123456789abcdef0",
        "/aws/sagemaker/TransformJobs",
        why,
    )
    out += _vpc(role, create_model.get("VpcConfig"), _rule("sagemaker.job.vpc"))
    return out
