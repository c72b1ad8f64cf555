"""``codetune run --input`` against a moto-deployed stack: validate, start, follow, exit status.

The stack deployed into moto's CloudFormation holds what the command reads of the real one:
the state machine (the rendered definition, SageMaker jobs replaced as in test_execution, the
training job created through moto's SageMaker so its TaskScheduled event names the job), the
ValidateRequest function with the environment the stack gives it, and the synthesized
template's outputs. Lambda invocations run the real handlers (test_execution's harness).
"""

from __future__ import annotations

import copy
import io
import json
import time
from contextlib import redirect_stdout

import boto3
import pytest
import test_execution as harness
from render import ACCOUNT, REGION, rendered_definition, resolve
from test_execution import (
    GOOD_SMOKE,
    Scenario,
    _input,
    _report,
    aws_world,
    substitute_sagemaker_jobs,
)

from codetune import cli
from codetune.workflow import naming
from codetune.workflow.errors import DeploymentFailed

RUN = "run-1"
# the harness's fixtures: the real handlers, and boto3 clients made fresh for each test
handlers = harness.handlers
fresh_aws_clients = harness.fresh_aws_clients
METRIC_LINES = [
    "[codetune] step=10 loss=1.2345 learning_rate=0.0002 tokens_per_second=512.3 epoch=0.5",
    "[codetune] step=20 loss=0.9876 learning_rate=0.0001 tokens_per_second=530.1 epoch=1",
]


def _create_training_job_through_sagemaker(definition: dict) -> dict:
    """TrainAdapter as a Task creating the job in moto's SageMaker (moto has no ``.sync``),
    so the history carries the TaskScheduled event a real execution has."""
    out = copy.deepcopy(definition)
    state = out["States"]["TrainAdapter"]
    if state["Type"] == "Pass" and "Parameters" in state:
        out["States"]["TrainAdapter"] = {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:createTrainingJob",
            "Parameters": state["Parameters"],
            "ResultPath": None,
            "Next": state["Next"],
        }
    return out


def _deploy_stack(synth, definition: dict, env: dict) -> str:
    """A CloudFormation stack in moto with the ValidateRequest function and the template's
    outputs, its StateMachineArn naming the state machine; returns the stack's name."""
    template = synth.template
    outputs = {k: {"Value": resolve(template, v["Value"])} for k, v in template["Outputs"].items()}
    # moto's CloudFormation creates state machines in the Step Functions backend that does
    # not execute them; the one that does (execute_state_machine) gets it through its API.
    machine = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name="codetune",
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn",
    )
    outputs["StateMachineArn"] = {"Value": machine["stateMachineArn"]}
    function = definition["States"]["ValidateRequest"]["Resource"]  # the function's ARN
    stack = {
        "Resources": {
            "ValidateRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "lambda.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                },
            },
            "ValidateRequest": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "FunctionName": function.rsplit(":", 1)[-1],
                    "Runtime": "python3.12",
                    "Handler": "handler.lambda_handler",
                    "Role": {"Fn::GetAtt": ["ValidateRole", "Arn"]},
                    "Code": {"ZipFile": "def lambda_handler(event, context): pass"},
                    "Environment": {
                        "Variables": {
                            k: v
                            for k, v in env["validate_request"].items()
                            if not k.startswith("_")
                        }
                    },
                },
            },
        },
        "Outputs": outputs,
    }
    cfn = boto3.client("cloudformation", region_name=REGION)
    cfn.create_stack(StackName=synth.stack_name, TemplateBody=json.dumps(stack))
    return synth.stack_name


def _training_logs(env: dict, lines: list[str]) -> None:
    """The training job's CloudWatch log stream, as SageMaker names it."""
    stage = env["validate_request"]["STAGE"]
    job = naming.attempt_name(naming.job_names(naming.run_id(RUN), stage)["train"])
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    stream = f"{job}/algo-1-1700000000"
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)],
    )


def run_cli(synth, handlers, scenario, monkeypatch, tmp_path, *args) -> tuple[int, str, dict]:
    """`codetune run --input <the scenario's input> *args` against the moto stack; returns
    (exit status, stdout, the executions of the state machine)."""
    definition = substitute_sagemaker_jobs(rendered_definition(synth.template), scenario, RUN)
    definition = _create_training_job_through_sagemaker(definition)
    path = tmp_path / "run-input.json"
    path.write_text(json.dumps(scenario.run_input))
    with aws_world(synth, handlers, scenario, monkeypatch) as world:
        stack = _deploy_stack(synth, definition, world.env)
        monkeypatch.setenv("CODETUNE_STACK", stack)
        monkeypatch.setenv("AWS_REGION", REGION)
        _training_logs(
            world.env, ["Loading base model...", *METRIC_LINES, "Saving adapter to /opt/ml/model"]
        )
        buf = io.StringIO()
        with redirect_stdout(buf):
            code = cli.main(
                ["run", "--input", str(path), "--run-name", RUN, "--poll-seconds", "0.2", *args]
            )
        sfn = boto3.client("stepfunctions", region_name=REGION)
        (machine,) = sfn.list_state_machines()["stateMachines"]
        executions = sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]
        return code, buf.getvalue(), {e["name"]: e["status"] for e in executions}


def test_run_follows_a_successful_execution(synth, handlers, monkeypatch, tmp_path):
    # guards: `codetune run --input` starts the deployed state machine and follows it to the
    # end: each task state started and done with its time, the training job's metric lines
    # (only those), the console URL, the output; exit 0
    scenario = Scenario(_input(synth), _report(0.30), smoke_answers=GOOD_SMOKE)
    code, out, executions = run_cli(synth, handlers, scenario, monkeypatch, tmp_path)
    assert code == 0, out
    assert executions == {RUN: "SUCCEEDED"}
    lines = out.splitlines()
    assert lines[0].startswith(f"started {RUN} on {synth.stack_name}: arn:aws:states:")
    assert lines[1].startswith(f"console: https://{REGION}.console.aws.amazon.com/states/")
    started = [ln.split("] ", 1)[1] for ln in lines if ln.endswith(" started")]
    # (PrepareDataset and EvaluateAdapter are Pass states in this harness, not printed)
    assert started[:3] == ["ValidateRequest started", "TrainAdapter started", "QualityGate started"]
    assert "SmokeTest started" in started
    assert any(ln.startswith("[+") and "TrainAdapter done in " in ln for ln in lines)
    assert "DatasetPrepared?" not in out  # routing states are not printed
    assert [ln.strip() for ln in lines if "[codetune]" in ln] == [
        f"TrainAdapter | {m}" for m in METRIC_LINES
    ]
    assert "Loading base model" not in out
    assert "execution succeeded in " in out and '"endpointName"' in out


def test_run_names_the_failed_state(synth, handlers, monkeypatch, tmp_path):
    # guards: a failed training job ends the command with exit 1, naming TrainAdapter with the
    # execution's error and the job's failure reason, and the console URL
    cause = json.dumps({"FailureReason": "AlgorithmError: CUDA out of memory"})
    scenario = Scenario(
        _input(synth),
        _report(0.30),
        job_failures={"TrainAdapter": ("States.TaskFailed", cause)},
    )
    code, out, executions = run_cli(synth, handlers, scenario, monkeypatch, tmp_path)
    assert code == 1, out
    assert executions == {RUN: "FAILED"}
    assert "execution failed at TrainAdapter after " in out and ": TrainAdapterFailed" in out
    assert "CUDA out of memory" in out
    assert out.rstrip().splitlines()[-1].startswith("console: https://")


def test_run_names_a_failed_lambda_task(synth, handlers, monkeypatch, tmp_path):
    # guards: a Lambda task's failure (a rolled-back deployment) is named from the task's own
    # failure event: DeployEndpoint, with the handler's error
    error = DeploymentFailed("SageMaker rolled endpoint codetune back: rollback alarm")
    scenario = Scenario(_input(synth), _report(0.30), deploy_error=error)
    code, out, _ = run_cli(synth, handlers, scenario, monkeypatch, tmp_path)
    assert code == 1, out
    assert "execution failed at DeployEndpoint after " in out and "DeploymentFailed" in out


def test_invalid_input_starts_nothing(synth, handlers, monkeypatch, tmp_path, capsys):
    # guards: an input ValidateRequest would refuse is refused here, by the same code with the
    # deployed function's environment (a codebase outside the stack's buckets), before any
    # execution starts; exit 2
    bad = _input(synth)
    bad["data"]["codebase"] = "s3://somebody-elses-bucket/code/"
    bad["training"]["instanceCount"] = 0
    code, out, executions = run_cli(
        synth, handlers, Scenario(bad, _report(0.30)), monkeypatch, tmp_path
    )
    assert code == 2
    assert executions == {}
    err = capsys.readouterr().err
    assert "instanceCount" in err and "somebody-elses-bucket" in err


def test_no_wait_only_starts(synth, handlers, monkeypatch, tmp_path):
    # guards: --no-wait starts the execution and returns at once with how to follow it
    scenario = Scenario(_input(synth), _report(0.30), smoke_answers=GOOD_SMOKE)
    code, out, executions = run_cli(synth, handlers, scenario, monkeypatch, tmp_path, "--no-wait")
    assert code == 0
    assert list(executions) == [RUN]
    assert "aws stepfunctions describe-execution --execution-arn arn:aws:states:" in out
    assert " started" not in out.split("console:", 1)[1]


@pytest.fixture
def interrupted(monkeypatch):
    """Ctrl-C right after the first poll of the execution."""
    import codetune.aws_run as aws_run

    poll = aws_run.Follower.poll

    def once_then_interrupt(self):
        poll(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(aws_run.Follower, "poll", once_then_interrupt)


def test_ctrl_c_leaves_the_execution_running(synth, handlers, monkeypatch, tmp_path, interrupted):
    # guards: Ctrl-C stops following only, and says how to stop the execution
    scenario = Scenario(_input(synth), _report(0.30), smoke_answers=GOOD_SMOKE)
    code, out, executions = run_cli(synth, handlers, scenario, monkeypatch, tmp_path)
    assert code == 130
    assert "the execution keeps running" in out
    assert "aws stepfunctions stop-execution --execution-arn arn:aws:states:" in out
    assert list(executions) == [RUN]
