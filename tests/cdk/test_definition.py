"""The rendered state machine definition: encryption of jobs, Retry/Catch/timeouts on every
task, instance-type names, and validation by cfn-lint and asl-validator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from render import rendered_definition, template_with_rendered_definition

from cdk.constructs.workflow import TRAINING_JOB_KEYS
from codetune.workflow.errors import RETRYABLE_ERRORS


@pytest.fixture(scope="module")
def states(synth) -> dict:
    return rendered_definition(synth.template)["States"]


def _jobs(states, kind: str) -> dict:
    return {
        n: s for n, s in states.items() if f"sagemaker:create{kind}Job" in str(s.get("Resource"))
    }


def test_every_task_retries_catches_and_times_out(states):
    # guards: Retry with backoff, Catch to the failure path, TimeoutSeconds on every Task
    tasks = {n: s for n, s in states.items() if s["Type"] == "Task"}
    # 6 Lambdas, prepare (single, sharded + merge), train, tune + BestTrial, 2 eval
    assert len(tasks) == 14
    for name, s in tasks.items():
        assert s.get("TimeoutSeconds", 0) > 0, name
        assert any(r.get("BackoffRate", 1) > 1 for r in s["Retry"]), name
        catches = s["Catch"]
        assert catches and catches[0]["ErrorEquals"] == ["States.ALL"], name
        target = catches[0]["Next"]
        if name != "NotifyFailure":
            assert states[target]["Next"] == "NotifyFailure", name
    assert states["NotifyFailure"]["Next"] == "ServiceError?"


def test_lambda_tasks_retry_the_handlers_retryable_error(states):
    # guards: the workflow's RetryableError (codetune.workflow.errors) is what Lambdas retry
    lambdas = [s for s in states.values() if "lambda" in str(s.get("Resource"))]
    assert len(lambdas) == 6
    for s in lambdas:
        assert set(RETRYABLE_ERRORS) <= set(s["Retry"][0]["ErrorEquals"])


def test_training_job_is_sent_as_validate_request_built_it(states):
    # guards one request builder: TrainAdapter takes every key of the CreateTrainingJob input
    # from ValidateRequest's training.job (codetune.train.job.training_job) and sets only the
    # attempt's name and the role it may pass; no per-mode variants, no choice before it
    (name,) = _jobs(states, "Training")
    assert name == "TrainAdapter"
    p = dict(states[name]["Parameters"])
    assert p.pop("TrainingJobName.$").startswith("States.Format('{}-r{}', $.request.jobs.train")
    assert p.pop("RoleArn").startswith("arn:aws:iam::")  # = ValidateRequest's TRAINING_ROLE_ARN
    assert p == {f"{k}.$": f"$.request.training.job.{k}" for k in TRAINING_JOB_KEYS}
    assert "VpcConfig.$" not in p  # this stage has no subnets (test_vpc_stage_sends_vpc_config)
    assert not [n for n in states if n.startswith(("Training", "UnknownTraining"))]


def test_vpc_stage_sends_vpc_config(synth_vpc):
    # guards: with subnets, TrainAdapter also sends the block's VpcConfig (ValidateRequest
    # gets the same subnets in its environment)
    p = rendered_definition(synth_vpc.template)["States"]["TrainAdapter"]["Parameters"]
    assert p["VpcConfig.$"] == "$.request.training.job.VpcConfig"


def test_processing_jobs_encrypt_everything(states):
    # guards: KMS on processing outputs always, inter-container encryption, and the volume
    # config built by the job's VolumeKey? choice
    jobs = _jobs(states, "Processing")
    assert len(jobs) == 5  # prepare, sharded prepare, merge, 2 evaluation variants
    resources = {"PrepareDataset": "prepare", "PrepareDatasetSharded": "prepare"}
    resources["MergeDataset"] = "merge"
    for name, s in jobs.items():
        p = s["Parameters"]
        job = resources.get(name, "evaluation")
        assert p["ProcessingResources"] == {"ClusterConfig.$": f"$.jobResources.{job}"}
        assert p["ProcessingOutputConfig"]["KmsKeyId"].startswith("arn:aws:kms:")
        assert p["NetworkConfig"]["EnableInterContainerTrafficEncryption"] is True


def _predecessors(states, target: str) -> set[str]:
    """Every state that can go to `target` (Next, Default, Choice rules, Catch)."""
    out = set()
    for name, s in states.items():
        nexts = [s.get("Next"), s.get("Default")]
        nexts += [c["Next"] for c in s.get("Choices", []) + s.get("Catch", [])]
        if target in nexts:
            out.add(name)
    return out


@pytest.mark.parametrize(
    "job, spec, entry",
    [
        ("Prepare", "$.request.prepare", "PrepareSharded?"),
        ("Merge", "$.request.prepare", "MergeDataset"),
        ("Evaluation", "$.request.evaluation", "BaseModelInS3ForEvaluation?"),
    ],
)
def test_volume_key_only_where_the_instance_type_allows_it(states, job, spec, entry):
    # guards: SageMaker refuses VolumeKmsKeyId on NVMe instance types (g5, p4d...): the job's
    # resource block carries the stack key unless ValidateRequest set <spec>.volumeKmsKey to
    # false, is otherwise the same, and every way into the job goes through that choice
    choice = states[f"{job}VolumeKey?"]
    assert choice["Choices"] == [
        {
            "Variable": f"{spec}.volumeKmsKey",
            "BooleanEquals": False,
            "Next": f"{job}ResourcesLocalStorage",
        }
    ]
    assert choice["Default"] == f"{job}ResourcesWithVolumeKey"
    with_key = states[f"{job}ResourcesWithVolumeKey"]
    local = states[f"{job}ResourcesLocalStorage"]
    assert with_key["Parameters"]["VolumeKmsKeyId"].startswith("arn:aws:kms:")
    assert "VolumeKmsKeyId" not in json.dumps(local["Parameters"])
    assert {k: v for k, v in with_key["Parameters"].items() if k != "VolumeKmsKeyId"} == local[
        "Parameters"
    ]
    assert local["Parameters"]["InstanceType.$"] == f"{spec}.instanceType"
    for s in (with_key, local):
        assert s["Type"] == "Pass"
        assert (s["ResultPath"], s["Next"]) == (f"$.jobResources.{job.lower()}", entry)
    assert _predecessors(states, entry) == {
        f"{job}ResourcesWithVolumeKey",
        f"{job}ResourcesLocalStorage",
    }


def test_sharded_prepare_then_merge(states):
    # guards the scale-out path: more than one prepare instance -> each gets its part of the
    # codebase (ShardedByS3Key) and writes under datasetShards; a one-instance merge job reads
    # all shards (fully replicated) into the dataset, then training; one instance -> as before
    choice = states["PrepareSharded?"]
    assert choice["Choices"] == [
        {
            "Variable": "$.request.prepare.instanceCount",
            "NumericGreaterThan": 1,
            "Next": "PrepareDatasetSharded",
        }
    ]
    assert choice["Default"] == "PrepareDataset"
    single, sharded = (
        states["PrepareDataset"]["Parameters"],
        states["PrepareDatasetSharded"]["Parameters"],
    )
    code = sharded["ProcessingInputs"][0]["S3Input"]
    assert code["S3DataDistributionType"] == "ShardedByS3Key"
    assert single["ProcessingInputs"][0]["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    out = sharded["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]
    assert out["S3Uri.$"] == "$.request.paths.datasetShards"
    assert states["PrepareDatasetSharded"]["Next"] == "MergeVolumeKey?"
    merge = states["MergeDataset"]["Parameters"]
    # ValidateRequest renders ["--merge", "/opt/ml/processing/input/shards", ...]
    assert merge["AppSpecification"]["ContainerArguments.$"] == "$.request.prepare.mergeArguments"
    (shards,) = merge["ProcessingInputs"]
    assert shards["S3Input"]["S3Uri.$"] == "$.request.paths.datasetShards"
    assert shards["S3Input"]["LocalPath"] == "/opt/ml/processing/input/shards"
    assert shards["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    assert merge["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri.$"] == (
        "$.request.paths.dataset"
    )
    assert states["MergeResourcesWithVolumeKey"]["Parameters"]["InstanceCount"] == 1
    assert states["MergeDataset"]["Next"] == states["PrepareDataset"]["Next"]


def test_instance_types_come_whole_from_the_request(synth, states):
    # guards: no "ml.ml." double prefix; instance types are the request's full names
    assert "ml.ml." not in json.dumps(synth.template)
    for pass_state in ("PrepareResourcesWithVolumeKey", "PrepareResourcesLocalStorage"):
        resources = states[pass_state]["Parameters"]
        assert resources["InstanceType.$"] == "$.request.prepare.instanceType"


def test_evaluation_isolated_when_base_model_in_s3(states):
    # guards: untrusted generated code runs without network when nothing must be downloaded
    assert states["EvaluateAdapterS3Model"]["Parameters"]["NetworkConfig"]["EnableNetworkIsolation"]


def test_cfn_lint_accepts_template_with_rendered_definition(synth, tmp_path):
    # guards: cfn-lint validates the states (it skips an Fn::Join DefinitionString)
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template_with_rendered_definition(synth.template)))
    # W3005 (redundant DependsOn) is how CDK orders roles before functions: not ours to fix.
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--ignore-checks",
            "W3005",
            "--",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_asl_validator_accepts_definition(synth, tmp_path, repo_root):
    # guards: the definition is valid Amazon States Language (asl-validator, pinned by make node)
    validator = repo_root / ".cache/node/node_modules/.bin/asl-validator"
    if not validator.exists():
        if shutil.which("npm") is None:
            pytest.skip("node/npm unavailable: asl-validator cannot run here")
        subprocess.run(["make", "node"], cwd=repo_root, check=True, capture_output=True)
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(rendered_definition(synth.template)))
    proc = subprocess.run(
        [str(validator), "--json-path", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_job_attempt_gets_its_own_name(states):
    # guards: a Retry of a .sync job state creates the job under a new name (SageMaker refuses
    # a name already used, even by a failed job), rendered exactly as naming.attempt_name does,
    # and the retry count stays one digit so names stay <= 63 characters
    from codetune.workflow import naming

    keys = {"Training": "TrainingJobName.$", "Processing": "ProcessingJobName.$"}
    for kind, key in keys.items():
        for name, s in _jobs(states, kind).items():
            value = s["Parameters"][key]
            base = value.split("(", 1)[1].split(",")[1].strip()
            assert value == (
                f"States.Format('{{}}{naming.ATTEMPT_SEPARATOR}{{}}', {base}, $$.State.RetryCount)"
            ), name
            assert base.startswith("$.request.jobs."), name
            assert all(r["MaxAttempts"] <= naming.MAX_RETRIES for r in s["Retry"]), name
            assert "jobName.$" in s["ResultSelector"], name  # the actual name, for later states


def test_later_states_read_the_actual_training_artifact(states):
    # guards: evaluation and registration take the adapter from the training task's result,
    # not from the request's predicted first-attempt path
    text = json.dumps(states)
    assert "$.request.paths.modelData" not in text
    assert states["RegisterAdapter"]["Parameters"]["modelDataUrl.$"] == "$.training.modelDataUrl"
    for name in ("EvaluateAdapter", "EvaluateAdapterS3Model"):
        [adapter] = [
            i["S3Input"]["S3Uri.$"]
            for i in states[name]["Parameters"]["ProcessingInputs"]
            if i["InputName"] == "adapter"
        ]
        assert adapter == "$.training.modelDataUrl", name


def test_job_states_do_not_retry_validation_errors(states):
    # guards: Step Functions reports SageMaker's ValidationException (and every other error
    # without its own class) as SageMaker.AmazonSageMakerException; retrying it made new jobs
    # that failed the same way three more times
    for name, s in states.items():
        if "sagemaker:" not in str(s.get("Resource")):
            continue
        retried = {e for r in s.get("Retry", []) for e in r["ErrorEquals"]}
        assert "SageMaker.AmazonSageMakerException" not in retried, name
        assert "SageMaker.ThrottlingException" in retried, name


def test_training_ends_before_the_execution_times_out(synth):
    # guards: the training task's timeout leaves room for prepare and evaluation inside the
    # state machine's, and ValidateRequest refuses jobs that may outlast the training task
    definition = rendered_definition(synth.template)
    states = definition["States"]
    train = states["TrainAdapter"]["TimeoutSeconds"]
    others = (
        states["PrepareDataset"]["TimeoutSeconds"] + states["EvaluateAdapter"]["TimeoutSeconds"]
    )
    assert train + others < definition["TimeoutSeconds"], (train, others)
    functions = [
        r for r in synth.template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
    ]
    (validate_env,) = [
        f["Properties"]["Environment"]["Variables"]
        for f in functions
        if "MAX_TRAINING_SECONDS" in f["Properties"]["Environment"]["Variables"]
    ]
    assert int(validate_env["MAX_TRAINING_SECONDS"]) < train


def _successors(state: dict) -> list[str]:
    out = [state["Next"]] if "Next" in state else []
    out += [c["Next"] for c in state.get("Choices", [])]
    out += [state["Default"]] if "Default" in state else []
    return out + [c["Next"] for c in state.get("Catch", [])]


def _slowest_path(states: dict, start: str) -> tuple[int, list[str]]:
    """The largest sum of Task TimeoutSeconds along a path from ``start`` to an end (a state
    already on the path ends it: the endpoint poll loop is counted once)."""
    best: tuple[int, list[str]] = (0, [])

    def walk(name: str, total: int, path: list[str]) -> None:
        nonlocal best
        state = states[name]
        total += state.get("TimeoutSeconds", 0) if state["Type"] == "Task" else 0
        path = [*path, name]
        nexts = [n for n in _successors(state) if n not in path]
        if total > best[0]:
            best = (total, path)
        for n in nexts:
            walk(n, total, path)

    walk(start, 0, [])
    return best


def test_no_path_outlasts_the_execution_timeout(synth):
    # guards: whichever way a run goes (sharded prepare + merge, spot, S3 model, any failure
    # path), its tasks' timeouts fit in the machine's timeout, so a slow step ends in its
    # Catch and NotifyFailure instead of the execution timing out with no notification
    definition = rendered_definition(synth.template)
    total, path = _slowest_path(definition["States"], definition["StartAt"])
    # through the training step: TrainAdapter, or (2 minutes longer) TuneAdapter + BestTrial
    assert ("TrainAdapter" in path or "BestTrial" in path) and total > 40 * 3600, (total, path)
    tasks = [n for n in path if definition["States"][n]["Type"] == "Task"]
    assert total <= definition["TimeoutSeconds"], (total, tasks)


def test_evaluation_requires_the_seccomp_sandbox(states):
    # guards: both evaluation states tell `codetune evaluate` its sandbox minimum, so the job
    # refuses to run generated code where the seccomp filter does not work (not a default
    # that a change elsewhere could weaken)
    from codetune import jobenv
    from codetune.evaluate import sandbox

    assert jobenv.SANDBOX_REQUIRE == sandbox.REQUIRE_ENV
    evals = {
        n: s for n, s in states.items() if n.startswith("EvaluateAdapter") and "Parameters" in s
    }
    assert set(evals) == {"EvaluateAdapter", "EvaluateAdapterS3Model"}
    for name, s in evals.items():
        value = s["Parameters"]["Environment"][jobenv.SANDBOX_REQUIRE]
        assert sandbox.parse_layers(value, name) == ("seccomp",), name
        # the run's settings are ValidateRequest's EvalConfig arguments, taken whole
        app = s["Parameters"]["AppSpecification"]
        assert app["ContainerArguments.$"] == "$.request.evaluation.arguments", name


def test_tuning_trials_are_the_training_job(states):
    # guards: TuneAdapter's TrainingJobDefinition is TrainAdapter's request (every key of
    # ValidateRequest's CreateTrainingJob block: image, channels, output + KMS, resources,
    # spot, checkpoints, environment, metric definitions; the role) but for the name, with the
    # static hyperparameters ValidateRequest left without the tuned keys; BestTrial puts the
    # best trial's training job where the later states read the adapter
    p = states["TuneAdapter"]["Parameters"]
    train = states["TrainAdapter"]["Parameters"]
    expected = {
        k: v for k, v in train.items() if k not in ("TrainingJobName.$", "HyperParameters.$")
    }
    expected["StaticHyperParameters.$"] = "$.request.tuning.staticHyperparameters"
    assert p["TrainingJobDefinition"] == expected
    assert p["HyperParameterTuningJobConfig.$"] == "$.request.tuning.jobConfig"
    assert p["HyperParameterTuningJobName.$"] == (
        "States.Format('{}-r{}', $.request.tuning.jobName, $$.State.RetryCount)"
    )
    assert states["TuneAdapter"]["Next"] == "BestTrial"
    assert states["TuneAdapter"]["ResultPath"] == "$.tuning"
    best = states["BestTrial"]
    assert best["Resource"].endswith(":::aws-sdk:sagemaker:describeTrainingJob")
    assert best["Parameters"] == {"TrainingJobName.$": "$.tuning.bestTrainingJob"}
    assert best["ResultPath"] == "$.training"
    assert best["ResultSelector"]["modelDataUrl.$"] == "$.ModelArtifacts.S3ModelArtifacts"
    assert best["Next"] == states["TrainAdapter"]["Next"]
    choice = states["Tuning?"]
    assert choice["Default"] == "TrainAdapter" and choice["Choices"][0]["Next"] == "TuneAdapter"
