"""``codetune run --input X.json`` on AWS: validate, start the deployed state machine, follow it.

    codetune run --input examples/run-input.json
    codetune run --input my-run.json --run-name try-2 --no-wait

The stack is ``$CODETUNE_STACK`` (default ``CodetuneDevStack``); its ``StateMachineArn``
output names the state machine. The input is validated here by the code ValidateRequest runs
(:func:`codetune.workflow.resolve.resolve_run_request`) with that function's environment as
deployed, so nothing starts for an input the workflow would refuse. Following prints each
state as it starts and ends (with the time since the execution started and the state's own
duration), the training job's metric lines from CloudWatch Logs, and the failing state's error
and cause. Ctrl-C stops following, not the execution.

Exit status: 0 succeeded (or started, with ``--no-wait``), 1 the execution failed (the failing
state is named), 2 invalid input.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from codetune.errors import CodetuneError
from codetune.metrics import parse_metrics

OUT_STATE_MACHINE = "StateMachineArn"  # cdk/stack.py
# States of the state machine (cdk/constructs/workflow.py): the first one, and the one every
# failure path goes through, whose input names the failed step in "state".
VALIDATE_STATE = "ValidateRequest"
NOTIFY_STATE = "NotifyFailure"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# Structural states (routing, bookkeeping) are not printed: they take no time.
QUIET_TYPES = ("Choice", "Pass")
FAILURE_EVENTS = {
    "TaskFailed",
    "TaskTimedOut",
    "TaskStartFailed",
    "TaskSubmitFailed",
    "LambdaFunctionFailed",
    "LambdaFunctionTimedOut",
    "LambdaFunctionStartFailed",
    "ActivityFailed",
    "ActivityTimedOut",
}
END_EVENTS = {"ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"}


class AwsRunError(CodetuneError):
    """``codetune run`` cannot start on AWS (no stack, no state machine, AWS refusal)."""


@dataclass(frozen=True)
class DeployedWorkflow:
    """What ``codetune run`` needs of the deployed stack."""

    stack: str
    state_machine_arn: str
    validate_env: dict[str, str]  # the ValidateRequest function's environment

    @property
    def region(self) -> str:
        return self.state_machine_arn.split(":")[3]


def console_url(execution_arn: str) -> str:
    """The Step Functions console page of an execution."""
    region = execution_arn.split(":")[3]
    return (
        f"https://{region}.console.aws.amazon.com/states/home?region={region}"
        f"#/v2/executions/details/{execution_arn}"
    )


def default_execution_name(input_path: Path, now: float | None = None) -> str:
    """``<input file stem>-YYYYmmdd-HHMMSS``: execution names are unique per state machine
    (90 days), so a re-run of the same input needs a new one."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", input_path.stem).strip("-")[:40] or "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"


# --------------------------------------------------------------------------- the stack


def find_workflow(session, stack_name: str) -> DeployedWorkflow:
    """The stack's state machine and the environment its ValidateRequest function runs with.

    Raises AwsRunError saying what to deploy or which permission is missing."""
    from botocore.exceptions import ClientError

    from codetune.train.remote import STACK_ENV

    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as e:
        raise AwsRunError(
            f"stack {stack_name} not found ({e.response['Error'].get('Message', e)}): deploy it "
            f"with `cdk deploy`, or set {STACK_ENV} to the deployed stack's name"
        ) from e
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    arn = outputs.get(OUT_STATE_MACHINE)
    if not arn:
        raise AwsRunError(f"stack {stack_name} has no {OUT_STATE_MACHINE} output")
    sfn = session.client("stepfunctions")
    try:
        definition = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
        function = _lambda_of(definition["States"][VALIDATE_STATE])
        config = session.client("lambda").get_function_configuration(FunctionName=function)
    except ClientError as e:
        raise AwsRunError(
            f"cannot read the {VALIDATE_STATE} function of {arn}: "
            f"{e.response['Error'].get('Message', e)} (needs states:DescribeStateMachine and "
            "lambda:GetFunctionConfiguration)"
        ) from e
    except (KeyError, TypeError, ValueError) as e:
        raise AwsRunError(
            f"state machine {arn} has no {VALIDATE_STATE} Lambda task: is {stack_name} a "
            "codetune stack?"
        ) from e
    env = config.get("Environment", {}).get("Variables", {})
    return DeployedWorkflow(stack=stack_name, state_machine_arn=arn, validate_env=env)


def _lambda_of(state: dict) -> str:
    """The function a Lambda task invokes: its Resource (a function ARN) or, with the
    ``lambda:invoke`` integration, its FunctionName parameter."""
    resource = state["Resource"]
    if resource.startswith("arn:aws:lambda:") or ":lambda:" in resource.split(":::")[0]:
        return resource
    return state["Parameters"]["FunctionName"]


def validate_for(workflow: DeployedWorkflow, doc, execution_name: str, s3):
    """The ValidateRequest verdict on ``doc`` (the RunRequest), from this machine."""
    from codetune.workflow.events import ValidateRequestEnv
    from codetune.workflow.resolve import resolve_run_request

    env = ValidateRequestEnv.from_environ(workflow.validate_env)
    return resolve_run_request(doc, execution_name=execution_name, env=env, s3=s3)


def start(sfn, workflow: DeployedWorkflow, doc, execution_name: str) -> str:
    """StartExecution; returns the execution ARN (AWS refusals become AwsRunError)."""
    from botocore.exceptions import ClientError

    try:
        return sfn.start_execution(
            stateMachineArn=workflow.state_machine_arn, name=execution_name, input=json.dumps(doc)
        )["executionArn"]
    except ClientError as e:
        err = e.response["Error"]
        hint = " (pass another --run-name)" if err.get("Code") == "ExecutionAlreadyExists" else ""
        raise AwsRunError(
            f"StartExecution failed ({err.get('Code')}): {err.get('Message')}{hint}"
        ) from e


# --------------------------------------------------------------------------- following


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _training_job(details: dict) -> str | None:
    """The training job a TaskScheduled event creates (``.sync`` or SDK integration)."""
    if "sagemaker" not in details.get("resourceType", ""):
        return None
    if not details.get("resource", "").startswith("createTrainingJob"):
        return None
    try:
        return json.loads(details.get("parameters") or "{}").get("TrainingJobName")
    except ValueError:
        return None


@dataclass
class Follower:
    """Reads an execution's history and the training jobs' logs, printing what is new."""

    sfn: object
    logs: object
    execution_arn: str
    out: TextIO
    started: float | None = None  # epoch seconds of ExecutionStarted
    next_token: str | None = None
    seen: int = 0  # the last history event id printed
    entered: dict[str, float] = field(default_factory=dict)  # state -> entered at
    current: str | None = None  # the last state entered
    quiet: set[str] = field(default_factory=set)  # states of QUIET_TYPES
    jobs: dict[str, str] = field(default_factory=dict)  # training job -> state
    log_start: int = 0
    log_seen: set[str] = field(default_factory=set)
    failure: tuple[str, str, str] | None = None  # (state, error, cause) of the last task failure
    failed_step: str | None = None  # what the failure path names
    end: dict | None = None  # the execution's end event

    def poll(self) -> bool:
        """Print the new events and metric lines; True once the execution ended."""
        for event in self._new_events():
            self._show(event)
        self._show_metrics()
        return self.end is not None

    def _new_events(self):
        kw = {"executionArn": self.execution_arn, "maxResults": 1000}
        if self.next_token:
            kw["nextToken"] = self.next_token
        while True:
            page = self.sfn.get_execution_history(**kw)
            for event in page["events"]:
                if event["id"] > self.seen:
                    self.seen = event["id"]
                    yield event
            if not page.get("nextToken"):
                return
            # keep the last page's token only when more pages follow; the last page is read
            # again from its start on the next poll (new events append to it)
            self.next_token = kw["nextToken"] = page["nextToken"]

    def _elapsed(self, ts) -> float:
        return ts.timestamp() - (self.started or ts.timestamp())

    def _say(self, ts, text: str) -> None:
        print(f"[+{_duration(self._elapsed(ts))}] {text}", file=self.out, flush=True)

    def _show(self, event: dict) -> None:
        kind, ts = event["type"], event["timestamp"]
        if kind == "ExecutionStarted":
            self.started = ts.timestamp()
        elif kind.endswith("StateEntered"):
            name = event["stateEnteredEventDetails"]["name"]
            self.current, self.entered[name] = name, ts.timestamp()
            if name == NOTIFY_STATE:
                self.failed_step = _step_of(event["stateEnteredEventDetails"].get("input"))
            if kind.removesuffix("StateEntered") in QUIET_TYPES:
                self.quiet.add(name)
            else:
                self._say(ts, f"{name} started")
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            if name not in self.quiet:
                took = ts.timestamp() - self.entered.get(name, ts.timestamp())
                self._say(ts, f"{name} done in {_duration(took)}")
        elif kind == "TaskScheduled":
            job = _training_job(event["taskScheduledEventDetails"])
            if job:
                self.jobs[job] = self.current or "?"
                self._say(ts, f"{self.current}: training job {job}")
        elif kind in FAILURE_EVENTS:  # the last one counts: an earlier one may have been retried
            details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            self.failure = (self.current or "?", details.get("error", ""), details.get("cause", ""))
        elif kind in END_EVENTS:
            self.end = event

    def _show_metrics(self) -> None:
        """Metric lines of the training jobs seen so far (the trainer's ``[codetune]`` lines)."""
        from botocore.exceptions import ClientError

        for job, state in self.jobs.items():
            kw = {
                "logGroupName": TRAINING_LOG_GROUP,
                "logStreamNamePrefix": f"{job}/",
                "startTime": self.log_start,
            }
            try:
                while True:
                    page = self.logs.filter_log_events(**kw)
                    for ev in page.get("events", []):
                        if ev["eventId"] in self.log_seen:
                            continue
                        self.log_seen.add(ev["eventId"])
                        line = ev["message"].rstrip()
                        if parse_metrics(line) is not None:
                            print(f"  {state} | {line}", file=self.out, flush=True)
                    if not page.get("nextToken"):
                        break
                    kw["nextToken"] = page["nextToken"]
            except ClientError:
                pass  # the log group and streams appear once the job's instances start

    def failed_state(self) -> tuple[str, str, str]:
        """(state, error, cause) of the failure that ended the execution.

        The state is the step the failure path names (every failure the state machine catches
        goes through NotifyFailure with it), else the state whose task failed last, else the
        state an execution error ``<State>Failed`` names."""
        details = next((v for k, v in (self.end or {}).items() if k.endswith("EventDetails")), {})
        error, cause = details.get("error", ""), details.get("cause", "")
        if self.failed_step:
            state = self.failed_step
        elif self.failure is not None:
            state = self.failure[0]
        elif error.endswith("Failed") and error.removesuffix("Failed") in self.entered:
            state = error.removesuffix("Failed")
        else:
            state = self.current or "?"
        return state, error or (self.failure or ("", "", ""))[1], cause


def _step_of(state_input: str | None) -> str | None:
    try:
        step = json.loads(state_input or "{}").get("state")
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, str) else None


def follow(follower: Follower, poll_s: float = 5.0) -> int:
    """Follow until the execution ends; 0 succeeded, 1 failed/aborted/timed out."""
    while not follower.poll():
        time.sleep(poll_s)
    out, kind = follower.out, follower.end["type"]
    took = _duration(follower.end["timestamp"].timestamp() - (follower.started or 0))
    if kind == "ExecutionSucceeded":
        output = follower.end.get("executionSucceededEventDetails", {}).get("output")
        print(f"execution succeeded in {took}", file=out)
        if output:
            print(json.dumps(json.loads(output), indent=2, sort_keys=True), file=out)
        return 0
    if kind == "ExecutionFailed":
        state, error, cause = follower.failed_state()
        print(f"execution failed at {state} after {took}: {error}", file=out)
        if cause:
            print(f"cause: {cause}", file=out)
    else:
        print(f"execution {kind.removeprefix('Execution').lower()} after {took}", file=out)
    print(f"console: {console_url(follower.execution_arn)}", file=out)
    return 1


# --------------------------------------------------------------------------- the command


def run_on_aws(
    input_path: Path,
    *,
    run_name: str | None,
    wait: bool = True,
    validate_only: bool = False,
    out: TextIO | None = None,
    poll_s: float = 5.0,
) -> int:
    """Validate ``input_path`` against the deployed stack, start it, and follow it."""
    from codetune.local import load_input
    from codetune.train.remote import DEFAULT_STACK, STACK_ENV, session_or_error

    out = out or sys.stdout
    doc = load_input(input_path)
    session = session_or_error()
    workflow = find_workflow(session, os.environ.get(STACK_ENV, DEFAULT_STACK))
    name = run_name or default_execution_name(input_path)
    request = validate_for(workflow, doc, name, session.client("s3"))
    if validate_only:
        print(json.dumps(request.to_dict(), indent=2, sort_keys=True), file=out)
        return 0
    sfn = session.client("stepfunctions")
    arn = start(sfn, workflow, doc, name)
    print(f"started {name} on {workflow.stack}: {arn}", file=out)
    print(f"console: {console_url(arn)}", file=out, flush=True)
    if not wait:
        print(
            f"follow it with:\n  aws stepfunctions describe-execution --execution-arn {arn}",
            file=out,
        )
        return 0
    follower = Follower(sfn=sfn, logs=session.client("logs"), execution_arn=arn, out=out)
    try:
        return follow(follower, poll_s=poll_s)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; the execution keeps running. Stop it with:\n"
            f"  aws stepfunctions stop-execution --execution-arn {arn}",
            file=out,
        )
        return 130
