"""Execute the rendered state machine in moto's Step Functions interpreter.

What is real: the definition as deployed (rendered from the synthesized template), moto's
ASL interpreter (Choice, Retry, Catch, Wait, intrinsic functions, Fail ErrorPath/CausePath),
the Lambda Task states and their payloads, and the six handlers in `lambdas/` with the
environment the stack gives them, talking to moto's S3, SageMaker, ECR, SNS and Application
Auto Scaling. moto 5.2.5 runs no Python Lambda without Docker, so its Docker-less Lambda
backend is patched to call the handler module in-process: a handler's exception becomes a
Lambda function error whose `errorType` is the exception class, as on AWS.

What is a stand-in: moto has no SageMaker `.sync` integration, so each SageMaker job state is
replaced by a Pass state producing what the real state would: the job's canned `Describe*`
output run through the state's own ResultSelector/ResultPath, or, for a failed job, the
error object its Catch would put at the Catch's ResultPath before going to the Catch's Next.
DeployEndpoint's failure (SageMaker rolling back an update) cannot be produced by moto; that
scenario makes the handler raise the same DeploymentFailed it raises on AWS.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from awscheck.record import as_principal, recording
from render import ACCOUNT, REGION, TRAINING, rendered_definition
from tuning_double import TuningDouble

from codetune.metrics import format_metrics
from codetune.workflow.errors import DeploymentFailed

HANDLERS = (
    "validate_request",
    "validate_batch",
    "quality_gate",
    "register_adapter",
    "deploy_endpoint",
    "smoke_test",
    "notify_failure",
)
BASE = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
# Two trials as the trainer prints them: the base model's validation loss first, the adapter's
# last (the objective); the second trial ends lower.
TRIAL_LOGS = (
    "\n".join([format_metrics(0, {"eval_loss": 2.5}), format_metrics(1, {"loss": 2.0}),
               format_metrics(50, {"eval_loss": 1.9})]),
    "\n".join([format_metrics(0, {"eval_loss": 2.5}), format_metrics(1, {"loss": 1.7}),
               format_metrics(50, {"eval_loss": 1.4})]),
)  # fmt: skip


@dataclass
class Scenario:
    """One execution: its input, the SageMaker job outcomes, and what AWS answers."""

    run_input: dict
    report: dict
    job_failures: dict[str, tuple[str, str]] = field(
        default_factory=dict
    )  # state -> (Error, Cause)
    smoke_answers: list | None = None
    deploy_error: Exception | None = None
    objects: dict[str, bytes] = field(default_factory=dict)  # s3 URI -> body, put before
    # with tuning: what each trial's trainer prints (tuning_double.TuningDouble scores them)
    trial_logs: list[str] = field(default_factory=lambda: list(TRIAL_LOGS))
    # TrainAdapter's request goes to moto's SageMaker (CreateTrainingJob, an aws-sdk task),
    # which records the job for DescribeTrainingJob (_training_states)
    record_training_job: bool = False


# -- the definition under test --------------------------------------------------------------


def _resolve_path(doc, path: str):
    node = doc
    for part in path.removeprefix("$").strip(".").split("."):
        if part:
            node = node[part]
    return node


def _apply_selector(selector: dict, output: dict) -> dict:
    return {
        k.removesuffix(".$"): _resolve_path(output, v) if k.endswith(".$") else v
        for k, v in selector.items()
    }


def _describe(state: dict, run_input_name: str) -> dict:
    """The canned Describe* output of a successful job, shaped like SageMaker's."""
    if "createTrainingJob" in state["Resource"]:
        return {
            "TrainingJobName": f"dev-{run_input_name}-train",
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {
                "S3ModelArtifacts": "s3://artifacts/runs/x/output/train/output/model.tar.gz"
            },
        }
    if "createTransformJob" in state["Resource"]:
        return {
            "TransformJobName": f"dev-{run_input_name}-batch-r0",
            "TransformJobStatus": "Completed",
            "TransformOutput": {"S3OutputPath": f"s3://artifacts/batch/{run_input_name}/output/"},
        }
    if "createModel" in state["Resource"]:
        return {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/dev-{run_input_name}"}
    return {"ProcessingJobName": f"dev-{run_input_name}-job", "ProcessingJobStatus": "Completed"}


def _tuning_states(state_name: str, state: dict) -> dict[str, dict]:
    """The tuning job's `.sync` state as states moto runs: its real Parameters into
    `$.sent.<state>`, CreateHyperParameterTuningJob and DescribeHyperParameterTuningJob on
    moto's SageMaker (aws-sdk tasks, answered by the tuning double with trials in moto's
    backend), then what `.sync` does with the description: a Completed job through the
    state's own ResultSelector and ResultPath to its Next, a Failed one as States.TaskFailed
    (status and FailureReason as the cause; moto keeps datetimes, which JsonToString of the
    whole description cannot render) to its Catch."""
    parameters = json.loads(json.dumps(state["Parameters"]).replace("$$.State.RetryCount", "0"))
    sent, described = f"$.sent.{state_name}", f"$.described.{state_name}"
    sdk = "arn:aws:states:::aws-sdk:sagemaker:"
    (catcher,) = [c for c in state["Catch"] if "States.ALL" in c["ErrorEquals"]]
    selector = {k: described + v[1:] if k.endswith(".$") else v
                for k, v in state["ResultSelector"].items()}  # fmt: skip
    return {
        state_name: {"Type": "Pass", "Parameters": parameters, "ResultPath": sent,
                     "Next": f"{state_name}Create"},
        f"{state_name}Create": {
            "Type": "Task", "Resource": sdk + "createHyperParameterTuningJob",
            # the request as the Pass rendered it (moto's SDK tasks take no InputPath)
            "Parameters": {f"{k}.$": f"{sent}.{k}" for k in (k.removesuffix(".$") for k in parameters)},
            "ResultPath": None, "Catch": state["Catch"], "Next": f"{state_name}Completed",
        },
        f"{state_name}Completed": {
            "Type": "Task", "Resource": sdk + "describeHyperParameterTuningJob",
            "Parameters": {"HyperParameterTuningJobName.$": f"{sent}.HyperParameterTuningJobName"},
            "ResultPath": described, "Catch": state["Catch"], "Next": f"{state_name}Status?",
        },
        f"{state_name}Status?": {
            "Type": "Choice",
            "Choices": [{"Variable": f"{described}.HyperParameterTuningJobStatus",
                         "StringEquals": "Completed", "Next": f"{state_name}Result"}],
            "Default": f"{state_name}Failed",
        },
        f"{state_name}Result": {"Type": "Pass", "Parameters": selector,
                                "ResultPath": state["ResultPath"], "Next": state["Next"]},
        f"{state_name}Failed": {
            "Type": "Pass",
            "Parameters": {"Error": "States.TaskFailed", "Cause.$": f"States.Format('{{}}: {{}}', {described}.HyperParameterTuningJobStatus, {described}.FailureReason)"},
            "ResultPath": catcher["ResultPath"], "Next": catcher["Next"],
        },
    }  # fmt: skip


def _training_states(state_name: str, state: dict, result: dict) -> dict[str, dict]:
    """The training job's `.sync` state as states moto runs: its real Parameters into
    `$.sent.<state>`, CreateTrainingJob on moto's SageMaker with them (an aws-sdk task: the job
    is recorded, DescribeTrainingJob reads it back), then the Completed job's ``result``."""
    parameters = json.loads(json.dumps(state["Parameters"]).replace("$$.State.RetryCount", "0"))
    sent = f"$.sent.{state_name}"
    # the rendered values; static ones as they are (moto's parser fails on "RoleArn.$")
    create = {k if k in parameters else f"{k}.$": parameters.get(k, f"{sent}.{k}")
              for k in (k.removesuffix(".$") for k in parameters)}  # fmt: skip
    return {
        state_name: {"Type": "Pass", "Parameters": parameters, "ResultPath": sent,
                     "Next": f"{state_name}Create"},
        f"{state_name}Create": {
            "Type": "Task", "Resource": "arn:aws:states:::aws-sdk:sagemaker:createTrainingJob",
            "Parameters": create,
            "ResultPath": None, "Catch": state["Catch"], "Next": f"{state_name}Completed",
        },
        f"{state_name}Completed": {"Type": "Pass", "Result": result,
                                   "ResultPath": state["ResultPath"], "Next": state["Next"]},
    }  # fmt: skip


def substitute_sagemaker_jobs(definition: dict, scenario: Scenario, name: str) -> dict:
    """Replace each SageMaker `.sync` state by the Pass state that produces its outcome (a
    tuning job by the states that run it against the tuning double). SDK tasks
    (`aws-sdk:sagemaker:*`, BestTrial) run as they are, against moto."""
    out = copy.deepcopy(definition)
    for state_name, state in list(out["States"].items()):
        if state.get("Type") == "Wait":
            state["Seconds"] = 0  # the endpoint poll interval; nothing to wait for in moto
        if state.get("Type") != "Task" or not state["Resource"].startswith(
            "arn:aws:states:::sagemaker:"
        ):
            continue
        if "createHyperParameterTuningJob" in state["Resource"] and (
            state_name not in scenario.job_failures
        ):
            out["States"].update(_tuning_states(state_name, state))
            continue
        if state_name in scenario.job_failures:
            error, cause = scenario.job_failures[state_name]
            (catcher,) = [c for c in state["Catch"] if "States.ALL" in c["ErrorEquals"]]
            out["States"][state_name] = {
                "Type": "Pass",
                "Result": {"Error": error, "Cause": cause},
                "ResultPath": catcher["ResultPath"],
                "Next": catcher["Next"],
            }
        else:
            result = _apply_selector(state["ResultSelector"], _describe(state, name))
            if "modelDataUrl" in result:
                # Unknown before the run: RegisterAdapter then uses request.paths.modelData,
                # which is where SageMaker puts it.
                result["modelDataUrl"] = None
            if scenario.record_training_job and "createTrainingJob" in state["Resource"]:
                out["States"].update(_training_states(state_name, state, result))
                continue
            replacement = {"Type": "Pass", "Result": result, "ResultPath": state["ResultPath"]}
            replacement["Next"] = state["Next"]
            # The state itself becomes a Pass evaluating the job's real Parameters (what the
            # .sync task would send to CreateXJob) into $.sent.<state>; then the outcome.
            # A Pass state has no $$.State.RetryCount (moto): this is the first attempt, 0.
            parameters = json.loads(
                json.dumps(state["Parameters"]).replace("$$.State.RetryCount", "0")
            )
            out["States"][state_name] = {
                "Type": "Pass",
                "Parameters": parameters,
                "ResultPath": f"$.sent.{state_name}",
                "Next": f"{state_name}Completed",
            }
            out["States"][f"{state_name}Completed"] = replacement
    return out


# -- the Lambdas: real handlers behind moto's Lambda API --------------------------------------


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"cdk_test_{name}",
        os.path.join(os.path.dirname(__file__), "../../lambdas", name, "handler.py"),
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def handlers():
    return {name: _load(name) for name in HANDLERS}


@pytest.fixture(autouse=True)
def fresh_aws_clients():
    """The handlers' cached boto3 clients (codetune.workflow.aws.client) are made here for
    this module's region (render.REGION); drop them before and after each execution so none
    made elsewhere answers here, nor one made here answers in another test directory."""
    from codetune.workflow.aws import reset_clients

    reset_clients()
    yield
    reset_clients()


def _layer_dir(synth):
    assets = json.loads((synth.outdir / f"{synth.stack_name}.assets.json").read_text())
    (layer,) = [
        synth.outdir / a["source"]["path"]
        for a in assets["files"].values()
        if (synth.outdir / a["source"]["path"] / "python" / "codetune").is_dir()
    ]
    return layer


def _function_env(synth) -> dict[str, dict]:
    """Each handler's environment as the stack sets it (rendered), keyed by handler name.

    Paths under /opt (where Lambda mounts the layer) point into the synthesized layer asset.
    """
    from render import resolve

    template = synth.template
    layer = str(_layer_dir(synth))
    out = {}
    for logical_id, res in template["Resources"].items():
        if res["Type"] != "AWS::Lambda::Function":
            continue
        code = json.dumps(res["Properties"]["Environment"]["Variables"])
        for name in HANDLERS:
            if name.replace("_", "") in logical_id.lower():
                variables = resolve(template, json.loads(code))
                out[name] = {
                    k: layer + v[len("/opt") :] if v.startswith("/opt/") else v
                    for k, v in variables.items()
                }
                out[name]["_function"] = logical_id.lower()
    return out


class Dispatcher:
    """moto LambdaSimpleBackend.invoke replacement: runs the real handler in-process."""

    def __init__(self, handlers, env, scenario: Scenario, s3):
        self.handlers, self.env, self.scenario, self.s3 = handlers, env, scenario, s3
        self.calls: list[str] = []

    def __call__(self, backend, function_name, qualifier, body, headers, response_headers):
        (name,) = [n for n, e in self.env.items() if e["_function"] in function_name]
        self.calls.append(name)
        event = json.loads(body)
        self._before(name, event)
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.env[name].items() if not k.startswith("_")})
        context = SimpleNamespace(
            function_name=function_name,
            memory_limit_in_mb=256,
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}",
            aws_request_id="req",
        )
        try:
            if name == "deploy_endpoint" and self.scenario.deploy_error is not None:
                raise self.scenario.deploy_error
            with as_principal(name):  # the calls it makes are this function's role's
                result = self.handlers[name].lambda_handler(event, context)
        except Exception as e:  # Lambda reports any exception as a function error
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}).encode()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return json.dumps(result).encode()

    def _before(self, name: str, event: dict) -> None:
        """Put what the (stand-in) SageMaker jobs would have written where the handler reads."""
        request = event.get("request")
        if name == "quality_gate":
            _put(self.s3, request["paths"]["report"], self.scenario.report)
        if name == "register_adapter":
            _put(self.s3, request["paths"]["dataset"] + "manifest.json", {"records": 120})
        if name == "smoke_test" and self.scenario.smoke_answers is not None:
            adapter = request["deployment"]["adapterName"]
            bodies = [
                a if a != "<adapter>" else _chat(adapter) for a in self.scenario.smoke_answers
            ]
            _queue_endpoint_answers(bodies)


def _put(s3, uri: str, doc) -> None:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())


def _chat(model: str) -> dict:
    return {
        "id": "c",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "return a + b"}}],
    }


def _queue_endpoint_answers(bodies: list) -> None:
    results = [
        {
            "Body": json.dumps(b),
            "ContentType": "application/json",
            "InvokedProductionVariant": "AllTraffic",
            "CustomAttributes": "",
        }
        for b in bodies
    ]
    resp = requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"results": results, "region": REGION},
    )
    assert resp.status_code == 201


# -- running one scenario -----------------------------------------------------------------------


@dataclass
class Outcome:
    status: str
    output: dict | None
    error: str | None
    cause: str | None
    states: list[str]
    lambda_calls: list[str]
    notifications: list[dict]
    job_requests: dict[str, dict]  # state -> the Create*Job request it would have sent
    request: dict | None = None  # ValidateRequest's output (the resolved run request)


@dataclass
class World:
    """moto's AWS as the stack's handlers find it, with the real handlers behind Lambda."""

    env: dict[str, dict]  # handler name -> its environment as the stack sets it
    dispatcher: Dispatcher
    sqs: object
    queue_url: str
    components: object  # awscheck.components.InferenceComponents: what was deployed on it


@contextlib.contextmanager
def aws_world(synth, handlers, scenario: Scenario, monkeypatch):
    """Inside moto: the buckets, codebase, package group, image, topic (an SQS queue
    subscribed) the stack would have, and Lambda invocations running the real handlers."""
    import boto3
    from moto import mock_aws
    from moto.awslambda_simple.models import LambdaSimpleBackend

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    from awscheck.components import InferenceComponents

    from codetune.workflow.aws import reset_clients

    env = _function_env(synth)
    with (
        mock_aws(
            config={
                "stepfunctions": {"execute_state_machine": True},
                "lambda": {"use_docker": False},
            }
        ),
        InferenceComponents(region=REGION).installed() as components,
    ):  # moto has no inference components
        reset_clients()
        s3 = boto3.client("s3", region_name=REGION)
        artifact = env["validate_request"]["ARTIFACT_BUCKET"]
        inputs = env["validate_request"]["ALLOWED_BUCKETS"]
        for bucket in (artifact, inputs):
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        s3.put_object(
            Bucket=inputs, Key="codebases/my-service/app.py", Body=b"def f():\n    return 1\n"
        )
        for uri, body in scenario.objects.items():
            bucket, key = uri.removeprefix("s3://").split("/", 1)
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        boto3.client("sagemaker", region_name=REGION).create_model_package_group(
            ModelPackageGroupName=env["validate_request"]["MODEL_PACKAGE_GROUP"]
        )
        image_uri = env["register_adapter"]["INFERENCE_IMAGE_URI"]
        repo, tag = image_uri.split("/", 1)[1].split(":")
        ecr = boto3.client("ecr", region_name=REGION)
        ecr.create_repository(repositoryName=repo)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + "a" * 64},
        }
        ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)
        sns = boto3.client("sns", region_name=REGION)
        topic_arn = sns.create_topic(Name=env["notify_failure"]["TOPIC_ARN"].rsplit(":", 1)[1])[
            "TopicArn"
        ]
        assert topic_arn == env["notify_failure"]["TOPIC_ARN"]
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="failures")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

        TuningDouble(scenario.trial_logs).install(monkeypatch)
        dispatcher = Dispatcher(handlers, env, scenario, s3)
        monkeypatch.setattr(LambdaSimpleBackend, "invoke", lambda self, *a: dispatcher(self, *a))
        yield World(
            env=env, dispatcher=dispatcher, sqs=sqs, queue_url=queue_url, components=components
        )


def execute(
    synth, handlers, scenario: Scenario, monkeypatch, name: str = "run-1", construct=TRAINING
) -> Outcome:
    """Run ``scenario`` through the state machine of ``construct`` (render.TRAINING/BATCH)."""
    with aws_world(synth, handlers, scenario, monkeypatch) as world:
        return execute_in(world, synth, scenario, name, construct)


def execute_in(world: World, synth, scenario: Scenario, name: str, construct=TRAINING) -> Outcome:
    """One execution of the rendered state machine of ``construct`` in ``world`` (several may
    share one)."""
    import boto3

    definition = substitute_sagemaker_jobs(
        rendered_definition(synth.template, construct), scenario, name
    )
    world.dispatcher.scenario = scenario
    world.dispatcher.calls = []
    dispatcher, sqs, queue_url = world.dispatcher, world.sqs, world.queue_url
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        # One state machine per execution (each renders its own canned jobs); a state machine
        # name is at most 80 characters, an execution name may be longer than what is left.
        name="codetune-" + hashlib.sha256(name.encode()).hexdigest()[:16],
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn",
    )["stateMachineArn"]
    execution = sfn.start_execution(
        stateMachineArn=arn, name=name, input=json.dumps(scenario.run_input)
    )["executionArn"]
    deadline = time.time() + 120
    while (desc := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.time() < deadline, "execution did not finish"
        time.sleep(0.1)
    history = sfn.get_execution_history(executionArn=execution)["events"]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e
    ]
    job_requests, request = {}, None
    for e in history:
        exited = e.get("stateExitedEventDetails")
        if exited and exited["name"] == "ValidateRequest":
            request = json.loads(exited["output"]).get("request")
        if exited and exited["name"] in definition["States"]:
            sent = json.loads(exited.get("output") or "{}").get("sent", {})
            if exited["name"] in sent:
                job_requests[exited["name"]] = sent[exited["name"]]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return Outcome(
        status=desc["status"],
        output=json.loads(desc["output"]) if desc.get("output") else None,
        error=desc.get("error"),
        cause=desc.get("cause"),
        states=entered,
        lambda_calls=dispatcher.calls,
        notifications=[json.loads(m["Body"]) for m in messages],
        job_requests=job_requests,
        request=request,
    )


# -- scenarios ---------------------------------------------------------------------------------


def _input(synth) -> dict:
    doc = json.loads((synth_repo() / "examples" / "run-input.json").read_text())
    inputs = _function_env(synth)["validate_request"]["ALLOWED_BUCKETS"]
    doc["data"]["codebase"] = f"s3://{inputs}/codebases/my-service/"
    doc["registration"] = {"autoApprove": True}
    # moto's CreateEndpointConfig knows no g5 instances; any GPU type serves the test.
    doc["deployment"] = {"instanceType": "ml.g4dn.xlarge"}
    return doc


def synth_repo():
    # not `from conftest import REPO`: with tests/lambdas in the same session, "conftest"
    # names that directory's module
    return Path(__file__).resolve().parents[2]


def _report(candidate_exact_fix: float) -> dict:
    return {
        "schemaVersion": "1",
        "runId": "run-1",
        "baseModel": BASE,
        "adapter": "s3://artifacts/runs/run-1/output/model.tar.gz",
        "suites": {
            "humaneval": {
                "n": 164,
                "base": {"pass@1": 0.40},
                "candidate": {"pass@1": 0.40},
                "paired": {"improved": 0, "regressed": 0, "both": 66, "neither": 98},
            },
            "bugfix": {
                "n": 200,
                "base": {"exact_fix": 0.10, "parses": 0.95},
                "candidate": {"exact_fix": candidate_exact_fix, "parses": 0.97},
                # the base fixes 20 of 200, the candidate those and `gained` more
                "paired": {
                    "improved": (gained := round(200 * candidate_exact_fix) - 20),
                    "regressed": 0,
                    "both": 20,
                    "neither": 180 - gained,
                },
            },
        },
        "gate": {"passed": True, "reasons": []},
    }


GOOD_SMOKE = [_chat(BASE), "<adapter>", [{"generated_text": "return a + b"}]]


def test_success_path_deploys_and_summarizes(synth, handlers, monkeypatch):
    # guards: the happy path runs every step in order and ends in Deployed with the summary
    out = execute(
        synth,
        handlers,
        Scenario(_input(synth), _report(0.30), smoke_answers=GOOD_SMOKE),
        monkeypatch,
    )
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    assert out.states[:6] == [
        "ValidateRequest",
        "DatasetPrepared?",
        "PrepareVolumeKey?",
        "PrepareResourcesWithVolumeKey",
        "PrepareSharded?",
        "PrepareDataset",
    ]
    assert "TrainAdapter" in out.states and out.states[-1] == "Deployed"
    assert out.lambda_calls[:3] == ["validate_request", "quality_gate", "register_adapter"]
    assert out.lambda_calls.count("deploy_endpoint") >= 2  # created, then polled to InService
    assert out.lambda_calls[-1] == "smoke_test"
    assert out.output["endpointName"] == "codetune-dev"  # cdk.json dev endpointName
    assert out.output["modelPackageArn"].startswith(
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/"
    )
    assert out.output["reportUri"].endswith("/eval/report.json")
    assert out.output["metrics"]["bugfix"]["candidate"]["exact_fix"] == 0.30
    assert out.notifications == []


def test_sharded_prepare_merges_before_training(synth, handlers, monkeypatch):
    # guards the scale-out path as executed: prepare on 3 instances with ShardedByS3Key and
    # its output under datasetShards, then a one-instance MergeDataset job from those shards
    # into the dataset prefix that training reads
    run_input = _input(synth)
    run_input["registration"] = {"autoApprove": False}
    run_input["prepare"] = {"instanceCount": 3}
    out = execute(synth, handlers, Scenario(run_input, _report(0.30)), monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    i = out.states.index("PrepareDatasetSharded")
    assert "PrepareDataset" not in out.states
    assert out.states[i + 1 : i + 5] == [
        "PrepareDatasetShardedCompleted",  # (the test's stand-in for the job's outcome)
        "MergeVolumeKey?",
        "MergeResourcesWithVolumeKey",
        "MergeDataset",
    ]
    prep, merge = out.job_requests["PrepareDatasetSharded"], out.job_requests["MergeDataset"]
    assert prep["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 3
    assert merge["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    code = prep["ProcessingInputs"][0]["S3Input"]
    assert code["S3DataDistributionType"] == "ShardedByS3Key"
    shards = prep["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    assert merge["ProcessingInputs"][0]["S3Input"]["S3Uri"] == shards
    dataset = merge["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    # per run: an earlier run with more instances leaves algo-N/ shards this one would merge
    run_id = prep["Environment"]["CODETUNE_RUN_ID"]
    assert shards == f"{dataset.rstrip('/')}-shards/{run_id}/"
    train = out.job_requests["TrainAdapter"]
    assert {c["DataSource"]["S3DataSource"]["S3Uri"] for c in train["InputDataConfig"]} == {dataset}
    assert merge["ProcessingJobName"].endswith("-merge-r0")


def test_manual_approval_ends_registered_not_deployed(synth, handlers, monkeypatch):
    # guards: without auto-approve the run registers the adapter and stops, awaiting approval
    run_input = _input(synth)
    run_input["registration"] = {"autoApprove": False}
    out = execute(synth, handlers, Scenario(run_input, _report(0.30)), monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    assert out.states[-1] == "RegisteredNotDeployed"
    assert out.output["approvalStatus"] == "PendingManualApproval"
    assert "endpointName" not in out.output and "deploy_endpoint" not in out.lambda_calls


def test_validation_error_fails_with_every_violation(synth, handlers, monkeypatch):
    # guards: a bad input ends in RunFailed with InvalidRunInput and the violation's path,
    # after NotifyFailure published it
    bad = _input(synth)
    bad["training"]["instanceCount"] = 0
    out = execute(synth, handlers, Scenario(bad, _report(0.30)), monkeypatch)
    assert out.status == "FAILED"
    assert out.error == "InvalidRunInput"
    assert "instanceCount" in out.cause
    assert out.states[-4:] == [
        "RecordValidateRequestFailure",
        "NotifyFailure",
        "ServiceError?",
        "RunFailed",
    ]
    assert len(out.notifications) == 1 and "InvalidRunInput" in out.notifications[0]["Message"]


def test_training_failure_is_reported(synth, handlers, monkeypatch):
    # guards: a failed training job goes through the Catch to NotifyFailure and RunFailed
    cause = json.dumps(
        {"FailureReason": "AlgorithmError: CUDA out of memory", "TrainingJobStatus": "Failed"}
    )
    scenario = Scenario(
        _input(synth), _report(0.30), job_failures={"TrainAdapter": ("States.TaskFailed", cause)}
    )
    out = execute(synth, handlers, scenario, monkeypatch)
    # (a Fail state cannot raise States.* names: the step's name carries it, the cause keeps it)
    assert out.status == "FAILED" and out.error == "TrainAdapterFailed", out.cause
    assert out.cause.startswith("States.TaskFailed: ") and "CUDA out of memory" in out.cause
    assert "RecordTrainAdapterFailure" in out.states and "QualityGate" not in out.states
    assert out.states[-1] == "StepFailed"
    assert len(out.notifications) == 1


def test_gate_rejection_stops_before_registration(synth, handlers, monkeypatch):
    # guards: a candidate below the thresholds fails the run with the gate's reasons and is
    # neither registered nor deployed
    out = execute(synth, handlers, Scenario(_input(synth), _report(0.10)), monkeypatch)
    assert out.status == "FAILED" and out.error == "QualityGateRejected"
    assert "FAIL bugfix exact-fix gain" in out.cause
    assert "register_adapter" not in out.lambda_calls
    assert out.states[-4:] == ["GateRejected", "NotifyFailure", "ServiceError?", "RunFailed"]


def test_two_runs_share_the_base_component(synth, handlers, monkeypatch):
    # guards: in the executed state machine the first run deploys the base component and its
    # adapter component, the second run adds its own adapter component on the same base and
    # neither updates nor deletes the base
    first = Scenario(_input(synth), _report(0.30), smoke_answers=GOOD_SMOKE)
    with aws_world(synth, handlers, first, monkeypatch) as world:
        out = execute_in(world, synth, first, "run-a")
        assert out.status == "SUCCEEDED", (out.error, out.cause)
        double = world.components
        (base,) = [c for c in double.components.values() if c.base is None]
        assert base.name.endswith("-base")
        assert [c.base for c in double.components.values() if c.base] == [base.name]
        since = len(double.requests)
        # moto answers a repeated request (same body and component header) from its cache:
        # the base component's answer is run-a's, only the new component's two are queued
        second = Scenario(_input(synth), _report(0.30), smoke_answers=GOOD_SMOKE[1:])
        out = execute_in(world, synth, second, "run-b")
        assert out.status == "SUCCEEDED", (out.error, out.cause)
    adapters = [c for c in double.components.values() if c.base == base.name]
    assert len(adapters) == 2
    changed = [
        (op, p)
        for op, p in double.requests[since:]
        if op.startswith(("Create", "Update", "Delete"))
    ]
    assert [op for op, _ in changed] == ["CreateInferenceComponent"]
    assert changed[0][1]["Specification"]["BaseInferenceComponentName"] == base.name
    # the smoke test of each run addressed its own adapter component
    assert double.invoked.count(base.name) == 2
    assert {a.name for a in adapters} <= set(double.invoked)


def test_deployment_failure_is_reported(synth, handlers, monkeypatch):
    # guards: DeploymentFailed from DeployEndpoint (a rolled-back update) ends the run
    error = DeploymentFailed(
        "SageMaker rolled endpoint codetune back: the update tripped a rollback alarm"
    )
    scenario = Scenario(_input(synth), _report(0.30), deploy_error=error)
    out = execute(synth, handlers, scenario, monkeypatch)
    assert out.status == "FAILED" and out.error == "DeploymentFailed"
    assert "rolled endpoint codetune back" in out.cause
    assert "SmokeTest" not in out.states
    assert out.states[-4:] == [
        "RecordDeployEndpointFailure",
        "NotifyFailure",
        "ServiceError?",
        "RunFailed",
    ]


def test_smoke_test_failure_catches_base_model_fallback(synth, handlers, monkeypatch):
    # guards: an adapter request answered by the base model fails the run at SmokeTest
    fallback = [_chat(BASE), _chat(BASE), [{"generated_text": "x"}]]
    out = execute(
        synth, handlers, Scenario(_input(synth), _report(0.30), smoke_answers=fallback), monkeypatch
    )
    assert out.status == "FAILED" and out.error == "SmokeTestFailed"
    assert "fallback" in out.cause
    assert out.states[-4:] == [
        "RecordSmokeTestFailure",
        "NotifyFailure",
        "ServiceError?",
        "RunFailed",
    ]


def test_train_adapter_sends_the_job_validate_request_built(synth, handlers, monkeypatch):
    # guards one request builder: the CreateTrainingJob input TrainAdapter sends is, key for
    # key, ValidateRequest's training.job (codetune.train.job.training_job), its first
    # attempt's name included; spot and an S3 base model need no state of their own
    artifact = _function_env(synth)["validate_request"]["ARTIFACT_BUCKET"]
    model = f"s3://{artifact}/base-models/qwen-coder/"
    run_input = _input(synth)
    run_input["baseModel"] = model
    run_input["training"].update(instanceType="ml.p3.2xlarge", spot=True)
    run_input["registration"] = {"autoApprove": False}
    scenario = Scenario(run_input, _report(0.30), objects={model + "config.json": b"{}"})
    out = execute(synth, handlers, scenario, monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    built = out.request["training"]["job"]
    assert out.job_requests["TrainAdapter"] == built
    assert built["EnableManagedSpotTraining"] is True
    assert built["CheckpointConfig"]["S3Uri"] == out.request["paths"]["checkpoints"]
    assert built["InputDataConfig"][2]["DataSource"]["S3DataSource"]["S3Uri"] == model


def _volumes(out: Outcome) -> dict[str, dict]:
    """Per job state run: its volume config as sent, and its output encryption key."""
    res = {}
    for name, req in out.job_requests.items():
        if "ResourceConfig" in req:
            res[name] = (req["ResourceConfig"], req["OutputDataConfig"].get("KmsKeyId"))
        else:
            cluster = req["ProcessingResources"]["ClusterConfig"]
            res[name] = (cluster, req["ProcessingOutputConfig"].get("KmsKeyId"))
    return res


def test_nvme_instance_jobs_send_no_volume_key(synth, handlers, monkeypatch):
    # guards: on ml.g5.xlarge (the example's training and, via "auto", evaluation instance;
    # NVMe storage) CreateTrainingJob/CreateProcessingJob get no VolumeKmsKeyId, which SageMaker
    # would refuse; prepare on ml.m5.xlarge (EBS) keeps it; every output stays KMS-encrypted
    run_input = _input(synth)
    run_input["registration"] = {"autoApprove": False}
    assert run_input["training"]["instanceType"] == "ml.g5.xlarge"
    out = execute(synth, handlers, Scenario(run_input, _report(0.30)), monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    volumes = _volumes(out)
    assert set(volumes) == {"PrepareDataset", "TrainAdapter", "EvaluateAdapter"}
    train, train_key = volumes["TrainAdapter"]
    assert train["InstanceType"] == "ml.g5.xlarge" and "VolumeKmsKeyId" not in train
    evaluation, eval_key = volumes["EvaluateAdapter"]
    assert evaluation["InstanceType"] == "ml.g5.xlarge" and "VolumeKmsKeyId" not in evaluation
    prepare, prepare_key = volumes["PrepareDataset"]
    assert prepare["InstanceType"] == "ml.m5.xlarge"
    assert prepare["VolumeKmsKeyId"].startswith("arn:aws:kms:")
    assert {train_key, eval_key} == {prepare["VolumeKmsKeyId"]}
    assert out.job_requests["TrainAdapter"]["TrainingJobName"].endswith("-r0")


def test_ebs_instance_jobs_send_the_volume_key(synth, handlers, monkeypatch):
    # guards: on EBS-only instance types (ml.p3.2xlarge training, ml.m5.xlarge evaluation) the
    # jobs' volumes are encrypted with the stack key
    run_input = _input(synth)
    run_input["registration"] = {"autoApprove": False}
    run_input["training"]["instanceType"] = "ml.p3.2xlarge"
    run_input["evaluation"] = {"instanceType": "ml.m5.xlarge"}
    out = execute(synth, handlers, Scenario(run_input, _report(0.30)), monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    volumes = _volumes(out)
    assert set(volumes) == {"PrepareDataset", "TrainAdapter", "EvaluateAdapter"}
    for name, (resources, output_key) in volumes.items():
        assert resources["VolumeKmsKeyId"].startswith("arn:aws:kms:"), name
        assert resources["VolumeKmsKeyId"] == output_key, name
    assert volumes["TrainAdapter"][0] == {
        "InstanceType": "ml.p3.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": volumes["TrainAdapter"][0]["VolumeSizeInGB"],
        "VolumeKmsKeyId": volumes["TrainAdapter"][1],
    }
    assert volumes["EvaluateAdapter"][0]["InstanceType"] == "ml.m5.xlarge"


def test_s3_base_model_reaches_the_s3_model_states(synth, handlers, monkeypatch):
    # guards: an s3:// base model with an explicit instance type passes ValidateRequest with
    # the real planner (it refused every s3:// model), and the run takes the S3-model branches:
    # the model channel in training, the model input and network isolation in evaluation
    artifact = _function_env(synth)["validate_request"]["ARTIFACT_BUCKET"]
    model = f"s3://{artifact}/base-models/qwen-coder/"
    run_input = _input(synth)
    run_input["baseModel"] = model
    run_input["training"]["instanceType"] = "ml.g5.2xlarge"
    run_input["registration"] = {"autoApprove": False}
    scenario = Scenario(run_input, _report(0.30), objects={model + "config.json": b"{}"})
    out = execute(synth, handlers, scenario, monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    assert "TrainAdapter" in out.states and "EvaluateAdapterS3Model" in out.states
    assert "EvaluateAdapter" not in out.states
    train = out.job_requests["TrainAdapter"]
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in train["InputDataConfig"]
    }
    assert channels["model"] == model
    evaluation = out.job_requests["EvaluateAdapterS3Model"]
    assert evaluation["NetworkConfig"]["EnableNetworkIsolation"] is True
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in evaluation["ProcessingInputs"]}
    assert inputs["model"] == model


def test_evaluation_settings_reach_the_job_as_its_config(synth, handlers, monkeypatch):
    # guards: the run input's evaluation settings (per-suite limits, thresholds) reach the
    # evaluate job as ContainerArguments that its own parser turns into the same EvalConfig
    from codetune.cli import build_parser
    from codetune.evaluate.cli import eval_config

    run_input = _input(synth)
    run_input["evaluation"] = {
        "suites": ["bugfix", "general"],
        "limit": {"bugfix": 93},
        "thresholds": {"max_p_value": 0.01},
    }
    run_input["registration"] = {"autoApprove": False}  # ends after registering
    out = execute(synth, handlers, Scenario(run_input, _report(0.30)), monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    app = out.job_requests["EvaluateAdapter"]["AppSpecification"]
    assert app["ContainerEntrypoint"] == ["evaluate"]
    config = eval_config(build_parser().parse_args(["evaluate", *app["ContainerArguments"]]))
    assert config.suites == ["bugfix", "general"] and config.limits()["bugfix"] == 93
    assert config.limits()["humaneval"] is None and config.thresholds == {"max_p_value": 0.01}


def _tuning_input(synth, **tuning) -> dict:
    run_input = _input(synth)
    run_input["registration"] = {"autoApprove": False}
    run_input["tuning"] = {
        "strategy": "Grid",
        "ranges": {"lora.rank": {"type": "categorical", "values": [8, 32]}},
        **tuning,
    }
    return run_input


def test_tuning_runs_the_training_job_as_trials_and_evaluates_the_best(
    synth, handlers, monkeypatch
):
    # guards: with a tuning section the run takes the tuning job instead of TrainAdapter; its
    # CreateHyperParameterTuningJob request (validated by the double against botocore's shapes
    # and SageMaker's rules) carries the training job as its definition; BestTrial reads the
    # best trial (the lower validation loss, read with the trainer's metric regex) back from
    # moto's SageMaker, and evaluation and registration get that trial's adapter
    with recording() as calls:
        out = execute(synth, handlers, Scenario(_tuning_input(synth), _report(0.30)), monkeypatch)
    assert out.status == "SUCCEEDED", (out.error, out.cause)
    assert "TuneAdapter" in out.states and "BestTrial" in out.states
    assert not any(s.startswith("TrainAdapter") for s in out.states)
    i = out.states.index("Tuning?")
    assert out.states[i + 1 : i + 7] == [
        "TuneAdapter",
        # (the test's stand-in for the .sync task: create, describe, the status it waits for)
        "TuneAdapterCreate", "TuneAdapterCompleted", "TuneAdapterStatus?", "TuneAdapterResult",
        "BestTrial",
    ]  # fmt: skip
    request = out.job_requests["TuneAdapter"]
    assert request["HyperParameterTuningJobName"].endswith("-tune-r0")
    definition = request["TrainingJobDefinition"]
    assert "lora.rank" not in json.loads(definition["StaticHyperParameters"]["codetune_overrides"])
    assert {c["ChannelName"] for c in definition["InputDataConfig"]} == {"train", "validation"}
    best = f"{request['HyperParameterTuningJobName']}-002-"  # lora.rank 32: eval_loss 1.4
    evaluation = out.job_requests["EvaluateAdapter"]
    (adapter,) = [
        i["S3Input"]["S3Uri"] for i in evaluation["ProcessingInputs"] if i["InputName"] == "adapter"
    ]
    output = definition["OutputDataConfig"]["S3OutputPath"]
    assert adapter.startswith(output + best) and adapter.endswith("/output/model.tar.gz")
    assert evaluation["Environment"]["CODETUNE_ADAPTER_URI"] == adapter
    # the registry names the trial and the value it was given for each tuned key
    (package,) = [c.params for c in calls if c.operation == "CreateModelPackage"]
    metadata = package["CustomerMetadataProperties"]
    assert metadata["bestTrainingJob"].startswith(best)
    assert metadata["tunedHyperparameters"] == "lora.rank=32"
    assert metadata["tuningJob"] == request["HyperParameterTuningJobName"].removesuffix("-r0")
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"] == adapter


def test_a_tuning_job_without_a_scored_trial_fails_the_run(synth, handlers, monkeypatch):
    # guards: when no trial prints the objective (SageMaker then fails the tuning job), the run
    # fails at TuneAdapter with the tuning job's failure, and nothing is evaluated
    scenario = Scenario(_tuning_input(synth), _report(0.30), trial_logs=["no metric line"])
    out = execute(synth, handlers, scenario, monkeypatch)
    assert out.status == "FAILED" and out.error == "TuneAdapterFailed", (out.error, out.cause)
    assert out.cause.startswith("States.TaskFailed: ") and "objective metric" in out.cause
    assert "BestTrial" not in out.states and "EvaluateAdapter" not in out.states
