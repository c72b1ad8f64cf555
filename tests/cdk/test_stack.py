"""Security and behaviour properties of the synthesized stack: one assertion per property."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from aws_cdk.assertions import Match, Template
from render import ACCOUNT, REGION

SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture(scope="module")
def template(synth) -> Template:
    return Template.from_json(synth.template)


@pytest.fixture(scope="module")
def states(synth) -> dict:
    from render import rendered_definition

    return rendered_definition(synth.template)["States"]


def _resources(synth, rtype: str) -> dict:
    return {k: v for k, v in synth.template["Resources"].items() if v["Type"] == rtype}


def _statements(synth, role_prefix: str) -> list[dict]:
    """All policy statements attached to roles whose logical id starts with `role_prefix`."""
    out = []
    for policy in _resources(synth, "AWS::IAM::Policy").values():
        roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
        if any(r.startswith(role_prefix) for r in roles):
            out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


def _as_list(x):
    return x if isinstance(x, list) else [x]


def test_cdk_nag_reports_no_findings(synth):
    # guards: zero unacknowledged cdk-nag AwsSolutions findings (synthesis raises on errors;
    # this also catches warnings, which do not fail synthesis)
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    violations = [v for r in report["pluginReports"] for v in r.get("violations", [])]
    assert violations == []


def test_kms_key_rotates(template):
    # guards: customer-managed key with yearly rotation
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_artifact_bucket_encrypted_with_stack_key_and_versioned(template, synth):
    # guards: SSE-KMS with the stack key, versioning, block public access, access logging
    (key_id,) = _resources(synth, "AWS::KMS::Key")
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
                            }
                        }
                    )
                ]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": Match.object_like({"LogFilePrefix": "artifact-bucket/"}),
        },
    )


def test_every_bucket_denies_plain_http(synth):
    # guards: SSL enforced on every bucket through a Deny on aws:SecureTransport=false
    buckets = set(_resources(synth, "AWS::S3::Bucket"))
    enforced = set()
    for policy in _resources(synth, "AWS::S3::BucketPolicy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if (
                st["Effect"] == "Deny"
                and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            ):
                enforced.add(policy["Properties"]["Bucket"]["Ref"])
    assert buckets and enforced == buckets


def test_lifecycle_expires_checkpoints_and_datasets(template):
    # guards: checkpoints and datasets expire after the configured days (dev: 7 and 30)
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {"Prefix": "checkpoints/", "ExpirationInDays": 7, "Status": "Enabled"}
                        ),
                        Match.object_like(
                            {"Prefix": "datasets/", "ExpirationInDays": 30, "Status": "Enabled"}
                        ),
                    ]
                )
            }
        },
    )


def test_no_managed_full_access_policies(synth):
    # guards: no AWS managed policies on any role (least privilege is written out)
    for role in _resources(synth, "AWS::IAM::Role").values():
        assert not role["Properties"].get("ManagedPolicyArns"), role


def test_no_wildcard_resource_on_write_actions(synth):
    # guards: every data/write action names its resources; "*" only for actions that have no
    # resource type (X-Ray, PutMetricData, GetAuthorizationToken, autoscaling, Describe*)
    allowed_star = re.compile(
        r"^(xray:|cloudwatch:(PutMetricData|DescribeAlarms)$|ecr:GetAuthorizationToken$|"
        r"application-autoscaling:|"
        r"ec2:Describe|logs:(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery|"
        r"ListLogDeliveries|PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups)$)"
    )
    for policy in _resources(synth, "AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "*" in _as_list(st["Resource"]):
                bad = [a for a in _as_list(st["Action"]) if not allowed_star.match(a)]
                assert not bad, st


def test_no_action_wildcards(synth):
    # guards: no `s3:*`, `s3:GetObject*` or `kms:ReEncrypt*` style action groups
    for policy in _resources(synth, "AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in _as_list(st["Action"]):
                assert "*" not in action, (action, st)


def test_sagemaker_job_role_limited_to_run_prefixes(synth):
    # guards: the job role's object access is limited to runs/, checkpoints/, datasets/ (rw)
    # and base-models/ (read), plus the input bucket read-only
    objects = []
    for st in _statements(synth, "SageMakerRolesJobRole"):
        if any(a.startswith("s3:") and a != "s3:ListBucket" for a in _as_list(st["Action"])):
            for res in _as_list(st["Resource"]):
                objects.append((tuple(sorted(_as_list(st["Action"]))), json.dumps(res)))
    writes = {r for actions, r in objects if "s3:PutObject" in actions}
    assert {re.search(r"/([a-z-]+/)\*", r).group(1) for r in writes} == {
        "runs/",
        "checkpoints/",
        "datasets/",
    }


def test_job_role_deletes_only_checkpoints(synth):
    # guards: no job needs DeleteObject on runs/ or datasets/ (only spot's checkpoint sync)
    deletes = [
        json.dumps(r)
        for st in _statements(synth, "SageMakerRolesJobRole")
        if "s3:DeleteObject" in _as_list(st["Action"])
        for r in _as_list(st["Resource"])
    ]
    assert deletes and all("/checkpoints/*" in r for r in deletes), deletes


def test_evaluation_runs_under_a_role_that_writes_only_eval(synth, states):
    # guards: the job that runs generated code can write only runs/*/eval/* of the artifact
    # bucket, delete nothing, and read nothing of the input bucket; both evaluation states
    # pass that role, every other job the job role
    stmts = _statements(synth, "SageMakerRolesEvaluationRole")
    writes = [
        json.dumps(r)
        for st in stmts
        if {"s3:PutObject", "s3:DeleteObject"} & set(_as_list(st["Action"]))
        for r in _as_list(st["Resource"])
    ]
    assert writes and all(w.endswith('/runs/*/eval/*"]]}') for w in writes), writes
    assert not any("s3:DeleteObject" in _as_list(st["Action"]) for st in stmts)
    assert "InputBucket" not in json.dumps(stmts)
    for name, state in states.items():
        if "createProcessingJob" in str(state.get("Resource")):
            role = state["Parameters"]["RoleArn"]
            assert ("evaluationrole" in role.lower()) == name.startswith("EvaluateAdapter"), name


def test_state_machine_passes_only_the_job_role_to_sagemaker(synth):
    # guards: iam:PassRole only on the SageMaker job role, only to sagemaker.amazonaws.com
    passes = [
        st
        for st in _statements(synth, "WorkflowStateMachineRole")
        if "iam:PassRole" in _as_list(st["Action"])
    ]
    assert len(passes) == 1
    (st,) = passes
    assert st["Resource"] == {"Fn::GetAtt": [Match.any_value(), "Arn"]} or "JobRole" in json.dumps(
        st["Resource"]
    )
    assert "JobRole" in json.dumps(st["Resource"])
    assert st["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_state_machine_has_sync_event_rules(synth):
    # guards: the EventBridge managed rules .sync integrations need, and nothing broader
    resources = [
        json.dumps(r)
        for st in _statements(synth, "WorkflowStateMachineRole")
        if "events:PutRule" in _as_list(st["Action"])
        for r in _as_list(st["Resource"])
    ]
    assert len(resources) == 3
    assert any("StepFunctionsGetEventsForSageMakerTrainingJobsRule" in r for r in resources)
    assert any("StepFunctionsGetEventsForSageMakerProcessingJobsRule" in r for r in resources)
    assert any("StepFunctionsGetEventsForSageMakerTuningJobsRule" in r for r in resources)


def test_state_machine_logs_traces_and_times_out(template):
    # guards: CloudWatch Logs (ALL), X-Ray tracing, and a machine-level timeout
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "LoggingConfiguration": Match.object_like({"Level": "ALL"}),
            "TracingConfiguration": {"Enabled": True},
        },
    )


def test_lambdas_latest_runtime_tracing_and_concurrency(synth):
    # guards: python3.14, X-Ray active, no reserved concurrency by default (Lambda keeps 10
    # unreserved and new accounts often have a limit of 10: `cdk deploy` would fail), own
    # log group, encrypted env
    functions = _resources(synth, "AWS::Lambda::Function")
    assert len(functions) == 7
    for fn in functions.values():
        p = fn["Properties"]
        assert p["Runtime"] == "python3.14"
        assert p["TracingConfig"] == {"Mode": "Active"}
        assert "ReservedConcurrentExecutions" not in p
        assert "LoggingConfig" in p and "KmsKeyArn" in p
        assert len(p["Layers"]) == 1


def test_reserved_concurrency_set_per_stage_reaches_every_function(synth_vpc):
    # guards: a stage's lambdaReservedConcurrency (3 in this variant) is what each function
    # reserves; the default stage reserves none (above)
    functions = _resources(synth_vpc, "AWS::Lambda::Function")
    assert len(functions) == 7
    assert {f["Properties"].get("ReservedConcurrentExecutions") for f in functions.values()} == {3}


def test_log_groups_have_retention_and_kms(synth):
    # guards: every log group has a retention and is encrypted with the stack key
    groups = _resources(synth, "AWS::Logs::LogGroup")
    assert len(groups) == 9  # seven Lambdas + the two state machines
    for g in groups.values():
        assert g["Properties"]["RetentionInDays"] == 30
        assert "KmsKeyId" in g["Properties"]


def test_failure_topic_is_kms_encrypted(template):
    # guards: the SNS topic for failures is encrypted with the stack key
    template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [Match.any_value(), "Arn"]}}
    )


def _timeout_event(state_machine_arn: str, status: str) -> dict:
    # the shape of Step Functions' "Execution Status Change" event (EventBridge docs)
    name = "nightly-7"
    execution = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
    return {
        "version": "0", "id": "e", "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states", "account": ACCOUNT, "time": "2026-12-03T14:00:00Z",
        "region": REGION, "resources": [execution], "ingestion-time": "2026-12-03T14:00:01Z",
        "detail": {"executionArn": execution, "stateMachineArn": state_machine_arn,
                   "name": name, "status": status, "startDate": 1, "stopDate": 2},
    }  # fmt: skip


@pytest.mark.parametrize("construct", ["Workflow", "BatchInference"])
def test_timed_out_execution_is_published_to_the_failure_topic(synth, construct):
    # guards: an execution that hits the machine's own timeout (no Catch runs, NotifyFailure
    # never does) still reaches the failure topic, naming the execution; other outcomes and
    # other machines do not (NotifyFailure already reported a failure); for both machines
    from moto.events.models import EventPattern
    from moto.events.utils import EventTemplateParser
    from render import resolve, state_machine_id

    t = synth.template
    sm_id = state_machine_id(t, construct)
    (topic_id,) = [k for k, v in t["Resources"].items() if v["Type"] == "AWS::SNS::Topic"]
    sm_arn, topic_arn = resolve(t, {"Ref": sm_id}), resolve(t, {"Ref": topic_id})
    rules = [resolve(t, r["Properties"]) for r in _resources(synth, "AWS::Events::Rule").values()]
    (rule,) = [
        r
        for r in rules
        if "aws.states" in r["EventPattern"]["source"]
        and r["EventPattern"]["detail"]["stateMachineArn"] == [sm_arn]
    ]
    pattern = EventPattern(None, rule["EventPattern"])
    assert pattern.matches_event(_timeout_event(sm_arn, "TIMED_OUT"))
    for status in ("SUCCEEDED", "FAILED", "RUNNING"):
        assert not pattern.matches_event(_timeout_event(sm_arn, status)), status
    assert not pattern.matches_event(_timeout_event(sm_arn + "-other", "TIMED_OUT"))
    (target,) = rule["Targets"]
    assert target["Arn"] == topic_arn
    message = EventTemplateParser.parse(
        input_template=target["InputTransformer"]["InputTemplate"],
        input_paths_map=target["InputTransformer"]["InputPathsMap"],
        event=_timeout_event(sm_arn, "TIMED_OUT"),
    )
    assert "nightly-7" in message and "timed out" in message, message
    # EventBridge publishes as events.amazonaws.com: the topic policy and the key allow it
    policies = [resolve(t, r["Properties"]) for r in _resources(synth, "AWS::SNS::TopicPolicy").values()]  # fmt: skip
    assert any(
        st["Effect"] == "Allow" and st["Principal"] == {"Service": "events.amazonaws.com"}
        and "sns:Publish" in _as_list(st["Action"])
        for p in policies for st in p["PolicyDocument"]["Statement"]
    )  # fmt: skip
    (key,) = _resources(synth, "AWS::KMS::Key").values()
    assert any(
        st["Principal"] == {"Service": "events.amazonaws.com"}
        and {"kms:Decrypt", "kms:GenerateDataKey"} <= set(_as_list(st["Action"]))
        for st in key["Properties"]["KeyPolicy"]["Statement"]
    )  # fmt: skip


def test_rollback_alarms_watch_endpoint_errors_and_latency(template, synth):
    # guards: 5xx and model-latency alarms exist and their names reach deploy_endpoint
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"MetricName": "Invocation5XXErrors", "Namespace": "AWS/SageMaker"},
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "ModelLatency", "ExtendedStatistic": "p90"}
    )
    alarms = set(_resources(synth, "AWS::CloudWatch::Alarm"))
    (deploy,) = [
        f for k, f in _resources(synth, "AWS::Lambda::Function").items() if "DeployEndpoint" in k
    ]
    env = json.dumps(deploy["Properties"]["Environment"]["Variables"]["ROLLBACK_ALARMS"])
    assert all(a in env for a in alarms)


@pytest.fixture(scope="module")
def both_stages(tmp_path_factory) -> dict:
    """dev and prod from cdk.json synthesized into one app (one account): name -> template."""
    import aws_cdk as cdk

    import app as cdk_app
    from cdk.config import load_stage

    out = tmp_path_factory.mktemp("cdk.out.both")
    # not conftest.cdk_context: with tests/workflow in the session "conftest" names its module
    context = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]
    application = cdk.App(context=context, outdir=str(out))
    stacks = [cdk_app.build(application, load_stage(context, s)) for s in ("dev", "prod")]
    application.synth()
    return {
        st.stack_name: json.loads((out / f"{st.stack_name}.template.json").read_text())
        for st in stacks
    }


def _named(template: dict, rtype: str, prop: str) -> list:
    return [r["Properties"][prop] for r in template["Resources"].values() if r["Type"] == rtype]


def test_dev_and_prod_share_an_account_without_collisions(both_stages):
    # guards: both stages default to distinct endpoint names and package groups (dev cannot
    # overwrite prod's endpoint), and only one manages the account-wide registry scanning
    # configuration (a singleton: a second stack would replace or fail on the first's)
    endpoints, groups, scanning = {}, {}, []
    for name, template in both_stages.items():
        for fn in _named(template, "AWS::Lambda::Function", "Environment"):
            if "ENDPOINT_NAME" in fn["Variables"]:
                endpoints[name] = fn["Variables"]["ENDPOINT_NAME"]
        groups[name] = _named(
            template, "AWS::SageMaker::ModelPackageGroup", "ModelPackageGroupName"
        )
        scanning += [name] * len(
            _named(template, "AWS::ECR::RegistryScanningConfiguration", "Rules")
        )
    assert len(set(endpoints.values())) == 2, endpoints
    assert len({g for v in groups.values() for g in v}) == 2, groups
    assert scanning == ["CodetuneProdStack"]
    # every name the templates fix (physical names, the endpoint and the job/model name
    # prefixes their policies are scoped to) is the stage's own
    names = {}
    for stack, template in both_stages.items():
        text = json.dumps(template)
        names[stack] = {
            f"{r['Type']}.{k}={v}"
            for r in template["Resources"].values()
            for k, v in r.get("Properties", {}).items()
            if k.endswith("Name") and k not in ("MetricName", "DisplayName", "PolicyName")
        }
        names[stack] |= {f"endpoint/{n}" for n in re.findall(r":endpoint/([A-Za-z0-9-]+)", text)}
        names[stack] |= {
            f"{kind}/{p}*"
            for kind, p in re.findall(
                r":(training-job|processing-job|model|endpoint-config)/([a-z0-9-]*)\*", text
            )
        }
    dev, prod = names["CodetuneDevStack"], names["CodetuneProdStack"]
    assert {"endpoint/codetune-dev", "training-job/dev-*", "model/dev-*"} <= dev, dev
    assert dev.isdisjoint(prod), dev & prod


def test_images_scanned_on_push(both_stages):
    # guards: the CDK asset repositories get basic scan-on-push (registry scanning rule)
    Template.from_json(both_stages["CodetuneProdStack"]).has_resource_properties(
        "AWS::ECR::RegistryScanningConfiguration",
        {
            "ScanType": "BASIC",
            "Rules": [
                {
                    "ScanFrequency": "SCAN_ON_PUSH",
                    "RepositoryFilters": [
                        {"Filter": "cdk-*-container-assets-*", "FilterType": "WILDCARD"}
                    ],
                }
            ],
        },
    )


def test_image_build_context_excludes_unrelated_files(synth):
    # guards: tests, cdk.out, Lambdas and docs are not in the image build context (their
    # edits must not change the image hash), and src/codetune is
    assets = json.loads((synth.outdir / f"{synth.stack_name}.assets.json").read_text())
    (images,) = [assets["dockerImages"]]
    assert len(images) == 2
    for image in images.values():
        context = synth.outdir / image["source"]["directory"]
        assert (context / "src" / "codetune" / "metrics.py").is_file()
        for excluded in ("tests", "lambdas", "docs", "cdk.out", ".venv", ".cache", "cdk"):
            assert not (context / excluded).exists(), excluded


def test_layer_carries_codetune_schemas_and_deps(synth):
    # guards: the Lambda layer has codetune, the JSON Schemas where codetune looks for them,
    # the training configs for the planner, and jsonschema built for the Lambda runtime
    assets = json.loads((synth.outdir / f"{synth.stack_name}.assets.json").read_text())
    layers = [
        synth.outdir / a["source"]["path"]
        for a in assets["files"].values()
        if (synth.outdir / a["source"]["path"] / "python" / "codetune").is_dir()
    ]
    assert len(layers) == 1
    python = layers[0] / "python"
    assert (python / "schemas" / "run-input.schema.json").is_file()
    assert (python / "codetune" / "workflow" / "validate.py").is_file()
    assert list((python / "rpds").glob("*cpython-314*x86_64*.so")), "rpds-py not built for 3.14"
    assert (layers[0] / "training_image" / "configs").is_dir()


def test_outputs_give_a_ready_start_execution_command(template):
    # guards: the README's deploy section relies on these outputs
    outputs = template.to_json()["Outputs"]
    assert {"StateMachineArn", "ArtifactBucketName", "StartExecutionCommand"} <= set(outputs)
    command = json.dumps(outputs["StartExecutionCommand"]["Value"])
    assert "aws stepfunctions start-execution --state-machine-arn" in command
    assert "--input file://examples/run-input.json" in command


def test_endpoint_name_pinned_to_the_alarmed_endpoint(synth):
    # guards: ValidateRequest refuses other endpoint names (ENDPOINT_NAME), so deploy and smoke
    # test are granted that one endpoint, the one the rollback alarms watch
    functions = _resources(synth, "AWS::Lambda::Function")
    envs = [f["Properties"].get("Environment", {}).get("Variables", {}) for f in functions.values()]
    [validate_env] = [e for e in envs if "ENDPOINT_NAME" in e]  # ValidateRequest
    assert validate_env["ENDPOINT_NAME"] == "codetune-dev"  # cdk.json dev endpointName
    alarms = _resources(synth, "AWS::CloudWatch::Alarm").values()
    for alarm in alarms:
        dims = {d["Name"]: d["Value"] for d in alarm["Properties"].get("Dimensions", [])}
        assert dims.get("EndpointName") == validate_env["ENDPOINT_NAME"]
    endpoint_arns = [
        json.dumps(r)
        for st in _statements(synth, "Functions")
        for r in _as_list(st["Resource"])
        if ":endpoint/" in json.dumps(r)
    ]
    assert endpoint_arns and all(a.endswith(':endpoint/codetune-dev"]]}') for a in endpoint_arns)


def test_outputs_are_what_train_remote_reads(synth, synth_vpc):
    # guards: `codetune train --remote` finds image, role and KMS key (and the VPC when one is
    # configured) under the output names it reads, pointing at the workflow's own resources
    from codetune.train import remote

    outputs = synth.template["Outputs"]
    resources = synth.template["Resources"]
    for name in (remote.OUT_ARTIFACT_BUCKET, remote.OUT_IMAGE, remote.OUT_ROLE, remote.OUT_KEY):
        assert name in outputs, name
    role = outputs[remote.OUT_ROLE]["Value"]["Fn::GetAtt"]
    assert role[1] == "Arn" and resources[role[0]]["Type"] == "AWS::IAM::Role"
    assert role[0].startswith("SageMakerRolesJobRole")
    key = outputs[remote.OUT_KEY]["Value"]["Fn::GetAtt"]
    assert key[1] == "Arn" and resources[key[0]]["Type"] == "AWS::KMS::Key"
    assert "container-assets" in json.dumps(outputs[remote.OUT_IMAGE]["Value"])
    assert remote.OUT_SUBNETS not in outputs  # dev has no VPC
    vpc_outputs = synth_vpc.template["Outputs"]
    assert vpc_outputs[remote.OUT_SUBNETS]["Value"] == "subnet-0a1b2c3d"
    assert vpc_outputs[remote.OUT_SECURITY_GROUPS]["Value"] == "sg-0a1b2c3d"


def test_vpc_config_reaches_every_sagemaker_job(synth_vpc):
    # guards: optional VPC settings from the stage config go to training and processing jobs
    # (the training job's VpcConfig is in the CreateTrainingJob input ValidateRequest builds
    # with its VPC_* environment)
    from render import rendered_definition, resolve

    states = rendered_definition(synth_vpc.template)["States"]
    jobs = [s for s in states.values() if "sagemaker:create" in str(s.get("Resource"))]
    assert jobs
    vpc = {"Subnets": ["subnet-0a1b2c3d"], "SecurityGroupIds": ["sg-0a1b2c3d"]}
    for s in jobs:
        p = s["Parameters"]
        p = p.get("TrainingJobDefinition", p)  # a tuning job's trials: the training job
        if "TrainingJobName.$" in p or "StaticHyperParameters.$" in p:
            assert p["VpcConfig.$"] == "$.request.training.job.VpcConfig"
        else:
            assert p["NetworkConfig"]["VpcConfig"] == vpc
    (validate,) = [
        r["Properties"]["Environment"]["Variables"]
        for k, r in synth_vpc.template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function" and "ValidateRequest" in k
    ]
    env = resolve(synth_vpc.template, validate)
    assert (env["VPC_SUBNET_IDS"], env["VPC_SECURITY_GROUP_IDS"]) == (
        "subnet-0a1b2c3d",
        "sg-0a1b2c3d",
    )


def _scrub(text: str) -> str:
    text = re.sub(r"[0-9a-f]{64}", "<hash>", text)
    return re.sub(r"\b\d{12}\b", "<account>", text)


def test_snapshot(synth):
    # guards: any change to the synthesized template is deliberate (asset hashes and account
    # ids scrubbed); refresh with CODETUNE_UPDATE_SNAPSHOTS=1
    actual = _scrub(json.dumps(synth.template, indent=1, sort_keys=True)) + "\n"
    path = SNAPSHOTS / f"{synth.stack_name}.template.json"
    if os.environ.get("CODETUNE_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"no snapshot {path}; create it with CODETUNE_UPDATE_SNAPSHOTS=1"
    assert actual == path.read_text()


def test_readme_deploy_section_names_the_stack_outputs(synth, repo_root):
    # guards: the README's deploy section matches what the stack prints
    readme = (repo_root / "README.md").read_text()
    section = readme[readme.index("## Deploy to AWS") :]
    for output in synth.template["Outputs"]:
        assert output in section, output
    assert synth.stack_name in section
