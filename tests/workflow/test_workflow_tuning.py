"""Run input `tuning`: validation before anything starts, and the tuning request it renders."""

from __future__ import annotations

import json

import pytest
from awscheck import limits

from codetune.metrics import format_metrics, metric_definitions
from codetune.train.hyperparameters import from_hyperparameters
from codetune.workflow import InvalidRunInput, RunRequest, validate_run_input
from codetune.workflow import tuning as tn
from codetune.workflow.events import validate_against
from codetune.workflow.naming import attempt_name
from codetune.workflow.schemas import RUN_REQUEST

BUCKET = "artifacts-bkt"
RANGES = {
    "lora.rank": {"type": "categorical", "values": [8, 16, 32]},
    "learning_rate": {"type": "continuous", "min": 1e-5, "max": 1e-3, "scaling": "Logarithmic"},
    "max_steps": {"type": "integer", "min": 20, "max": 60},
}


def _validate(doc, **kw):
    kw.setdefault("execution_name", "nightly-2026-11-22")
    kw.setdefault("artifact_bucket", BUCKET)
    return validate_run_input(doc, **kw)


def _violations(doc, **kw) -> dict[str, str]:
    with pytest.raises(InvalidRunInput) as e:
        _validate(doc, **kw)
    return dict(e.value.violations)


def _training_job(req: RunRequest) -> dict:
    """A CreateTrainingJob input as the state machine sends it for this request (spot)."""
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    return {
        "TrainingJobName": attempt_name(req.jobs.train),
        "RoleArn": "arn:aws:iam::123456789012:role/codetune-jobrole",
        "AlgorithmSpecification": {
            "TrainingImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/train:abc",
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
        },
        "HyperParameters": req.training.hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": req.paths.dataset,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for name in ("train", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": req.paths.output, "KmsKeyId": key},
        "ResourceConfig": {
            "InstanceType": req.training.instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": 100,
        },
        "StoppingCondition": {
            "MaxRuntimeInSeconds": req.training.max_runtime_seconds,
            "MaxWaitTimeInSeconds": req.training.max_wait_seconds,
        },
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": req.paths.checkpoints, "LocalPath": "/opt/ml/checkpoints"},
        "EnableInterContainerTrafficEncryption": True,
        "Environment": {"CODETUNE_RUN_ID": req.run_id},
        "Tags": [{"Key": "run", "Value": req.run_id}],
    }


def _tuning_request(req: RunRequest, attempt: int = 0) -> dict:
    job = _training_job(req)
    return {
        "HyperParameterTuningJobName": attempt_name(req.tuning.job_name, attempt),
        "HyperParameterTuningJobConfig": req.tuning.job_config,
        "TrainingJobDefinition": tn.training_job_definition(job, req.tuning.static_hyperparameters),
    }


def test_without_tuning_the_request_has_none(fake_planner, base_input):
    # guards: tuning is off by default; the request says so (the state machine's choice)
    req = _validate(base_input)
    assert req.tuning is None and req.to_dict()["tuning"] is None


def test_tuning_renders_a_request_botocore_accepts(fake_planner, base_input):
    # guards: the CreateHyperParameterTuningJob input rendered from a tuning section passes
    # botocore's shapes (lengths, patterns, enums) and SageMaker's documented rules, with the
    # longest execution name and stage, and the last attempt's name
    base_input["training"]["spot"] = True
    base_input["tuning"] = {"ranges": RANGES, "maxJobs": 6, "maxParallelJobs": 2}
    req = _validate(
        base_input,
        execution_name="n" * 36 + "-" + "x" * 43,
        stage="production",
        max_training_seconds=172800,
    )
    validate_against(RUN_REQUEST, req.to_dict(), "request")
    assert RunRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req
    for attempt in (0, 9):
        request = _tuning_request(req, attempt)
        assert limits.problems("sagemaker", "CreateHyperParameterTuningJob", request) == []
    config = req.tuning.job_config
    assert config["Strategy"] == "Bayesian"
    assert config["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": 6,
        "MaxParallelTrainingJobs": 2,
        "MaxRuntimeInSeconds": 172800,
    }
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "train:eval_loss",
    }
    ranges = config["ParameterRanges"]
    assert ranges["CategoricalParameterRanges"] == [
        {"Name": "lora.rank", "Values": ["8", "16", "32"]}
    ]
    assert ranges["ContinuousParameterRanges"] == [
        {
            "Name": "learning_rate",
            "MinValue": "1e-05",
            "MaxValue": "0.001",
            "ScalingType": "Logarithmic",
        }
    ]
    assert ranges["IntegerParameterRanges"] == [
        {"Name": "max_steps", "MinValue": "20", "MaxValue": "60", "ScalingType": "Auto"}
    ]
    assert req.tuning.job_name.startswith("production-") and len(req.tuning.job_name) <= 29


def test_definition_is_the_training_job_but_its_name(fake_planner, base_input):
    # guards: a trial is the single training job — image, role, channels, output + KMS,
    # resources, spot, checkpoints, environment — with its hyperparameters as static ones
    base_input["training"]["spot"] = True
    base_input["tuning"] = {"ranges": RANGES}
    req = _validate(base_input)
    job = _training_job(req)
    defn = tn.training_job_definition(job, req.tuning.static_hyperparameters)
    dropped = {"TrainingJobName", "Tags", "HyperParameters"}
    assert {k: v for k, v in job.items() if k not in dropped} == {
        k: v for k, v in defn.items() if k != "StaticHyperParameters"
    }
    assert defn["StaticHyperParameters"] == job["HyperParameters"]
    # Step Functions parameters convert the same way, paths kept as paths
    asl = {"RoleArn": "r", "HyperParameters.$": "$.h", "OutputDataConfig.$": "$.o",
           "AlgorithmSpecification": {"TrainingImage": "i", "TrainingInputMode": "File"},
           "StoppingCondition": {"MaxRuntimeInSeconds.$": "$.s"}, "TrainingJobName.$": "$.n"}  # fmt: skip
    out = tn.training_job_definition(asl, "$.request.tuning.staticHyperparameters")
    assert out["StaticHyperParameters.$"] == "$.request.tuning.staticHyperparameters"
    assert "TrainingJobName.$" not in out and "HyperParameters.$" not in out


def test_a_trial_decodes_its_tuned_keys_like_static_overrides(fake_planner, base_input):
    # guards: the hyperparameters SageMaker gives a trial (static + tuned values as strings +
    # its _tuning_objective_metric) decode into the same overrides the trainer loads
    base_input["training"]["overrides"] = {"warmup_steps": 1}
    base_input["tuning"] = {"ranges": RANGES}
    req = _validate(base_input)
    ranges = req.tuning.job_config["ParameterRanges"]
    trial = {
        **req.tuning.static_hyperparameters,
        "lora.rank": ranges["CategoricalParameterRanges"][0]["Values"][1],
        "learning_rate": "0.00031622776601683794",
        "max_steps": "42",
        "_tuning_objective_metric": "train:eval_loss",
    }
    name, sets = from_hyperparameters(trial)
    from codetune.train.config import load_train_config

    config = load_train_config(name, sets)
    assert (config.lora.rank, config.max_steps, config.warmup_steps) == (16, 42, 1)
    assert config.learning_rate == pytest.approx(0.00031622776601683794)
    assert config.base_model == base_input["baseModel"]


def test_objective_regex_reads_the_last_validation_loss():
    # guards: the objective is the trainer's eval_loss line as its MetricDefinitions regex
    # reads it; the last one (the adapter's) wins over the base model's at step 0
    log = "\n".join([
        format_metrics(0, {"eval_loss": 2.5}),
        format_metrics(1, {"loss": 1.9, "learning_rate": 0.0005}),
        format_metrics(2, {"eval_loss": 1.234567}),
    ])  # fmt: skip
    assert tn.objective_value(log) == 1.23457
    assert tn.objective_value(format_metrics(1, {"loss": 1.0})) is None


@pytest.mark.parametrize(
    ("ranges", "extra", "path", "words"),
    [
        ({"lora.rnk": {"type": "categorical", "values": [8]}}, {}, "$.tuning.ranges.lora.rnk",
         "not a training config key"),
        ({"base_model": {"type": "categorical", "values": ["a/b"]}}, {}, "$.tuning.ranges.base_model",
         "not tunable"),
        ({"learning_rate": {"type": "integer", "min": 1, "max": 2}}, {}, "$.tuning.ranges.learning_rate.type",
         "allowed: continuous, categorical"),
        ({"lora.rank": {"type": "integer", "min": 0, "max": 16}}, {}, "$.tuning.ranges.lora.rank.min",
         "lora.rank must be >= 1, got 0"),
        ({"lora.rank": {"type": "integer", "min": 32, "max": 16}}, {}, "$.tuning.ranges.lora.rank.min",
         "above max"),
        ({"learning_rate": {"type": "continuous", "min": 0, "max": 0.1, "scaling": "Logarithmic"}}, {},
         "$.tuning.ranges.learning_rate.min", "Logarithmic scaling needs min > 0"),
        ({"max_steps": {"type": "integer", "min": 1}}, {}, "$.tuning.ranges.max_steps.max", "required"),
        ({"lora.rank": {"type": "categorical", "values": [8], "min": 1}}, {}, "$.tuning.ranges.lora.rank",
         "only for integer and continuous"),
        ({"max_steps": {"type": "integer", "min": 10, "max": 20}}, {"strategy": "Grid"},
         "$.tuning.ranges.max_steps", "Grid searches categorical ranges only"),
        ({"lora.rank": {"type": "categorical", "values": [8, 16]}}, {"strategy": "Grid", "maxJobs": 3},
         "$.tuning.maxJobs", "differs from the grid's 2 combinations"),
        ({"lora.rank": {"type": "categorical", "values": [8, 16]}}, {"maxJobs": 2, "maxParallelJobs": 3},
         "$.tuning.maxParallelJobs", "allowed: <= maxJobs"),
        ({"lora.rank": {"type": "categorical", "values": [8, 16]}}, {"strategy": "Hyperband"},
         "$.tuning.strategy", '"Hyperband" is not allowed'),
        ({}, {}, "$.tuning.ranges", "should be non-empty"),
    ],
)  # fmt: skip
def test_bad_tuning_is_refused_before_anything_starts(
    fake_planner, base_input, ranges, extra, path, words
):
    # guards: each way a tuning section can be wrong is one violation at its path, with the
    # trainer's own message where the trainer would refuse a trial's value
    base_input["tuning"] = {"ranges": ranges, **extra}
    found = _violations(base_input)
    assert path in found, found
    assert words in found[path], found[path]


def test_a_key_both_static_and_tuned_is_refused(fake_planner, base_input):
    # guards: one place per key — a tuned key must not also be a static override
    base_input["training"]["overrides"] = {"lora.rank": 16}
    base_input["tuning"] = {"ranges": {"lora.rank": {"type": "categorical", "values": [8, 32]}}}
    found = _violations(base_input)
    assert "also in training.overrides" in found["$.tuning.ranges.lora.rank"]


def test_tuning_job_names_fit_and_never_collide():
    # guards: names fit SageMaker's 32 characters with the -r9 suffix, start with the stage
    # (the IAM grants are by prefix), and distinct long run ids get distinct names
    long_a, long_b = "a" * 31 + "-11111111", "a" * 31 + "-22222222"
    for stage in (None, "dev", "production"):
        for rid in ("run-1", long_a, long_b):
            name = tn.tuning_job_name(rid, stage)
            assert len(attempt_name(name, 9)) <= 32, name
            assert limits.problems(
                "sagemaker", "DescribeHyperParameterTuningJob",
                {"HyperParameterTuningJobName": attempt_name(name, 9)},
            ) == []  # fmt: skip
            assert name.startswith(f"{stage}-" if stage else rid[:3])
        assert tn.tuning_job_name(long_a, stage) != tn.tuning_job_name(long_b, stage)
    assert tn.tuning_job_name("run-1", "dev") == "dev-run-1-tune"


def test_local_trials_follow_the_strategy():
    # guards: Grid runs every combination; Random draws maxJobs trials inside the ranges
    # (log-uniform for Logarithmic), the same draws for the same run id
    grid = {"strategy": "Grid", "maxJobs": None, "ranges": {
        "lora.rank": {"type": "categorical", "values": [8, 16]},
        "lora.alpha": {"type": "categorical", "values": [16, 32]}}}  # fmt: skip
    assert tn.local_trials(grid, seed_of="r") == [
        {"lora.alpha": 16, "lora.rank": 8}, {"lora.alpha": 16, "lora.rank": 16},
        {"lora.alpha": 32, "lora.rank": 8}, {"lora.alpha": 32, "lora.rank": 16},
    ]  # fmt: skip
    rand = {"strategy": "Random", "maxJobs": 50, "ranges": RANGES}
    trials = tn.local_trials(rand, seed_of="r")
    assert len(trials) == 50 and trials == tn.local_trials(rand, seed_of="r")
    assert all(1e-5 <= t["learning_rate"] <= 1e-3 for t in trials)
    assert all(isinstance(t["max_steps"], int) and 20 <= t["max_steps"] <= 60 for t in trials)
    below = sum(t["learning_rate"] < 1e-4 for t in trials)
    assert 10 <= below <= 40  # log-uniform: half the draws below the geometric middle
    assert {t["lora.rank"] for t in trials} == {8, 16, 32}


def test_best_trial_is_the_lowest_validation_loss():
    # guards: Minimize, trials without an objective skipped, none at all is an error
    trials = [{"name": "a", "objective": 1.2}, {"name": "b", "objective": None},
              {"name": "c", "objective": 0.9}]  # fmt: skip
    assert tn.best_trial(trials)["name"] == "c"
    with pytest.raises(Exception, match="no trial printed eval_loss"):
        tn.best_trial([{"name": "b", "objective": None}])


def test_registry_names_the_best_trial_and_its_tuned_values(fake_planner, base_input):
    # guards: the model package of a tuned run records the tuning job, the best trial and the
    # values of the tuned keys only (decoded as the trial decoded them); untuned runs record none
    from codetune.workflow.registry import tuned_values_text, tuning_metadata

    base_input["tuning"] = {"ranges": RANGES}
    req = _validate(base_input)
    training = {
        "jobName": f"{req.tuning.job_name}-r0-003-0a1b2c3d",
        "hyperparameters": {**req.tuning.static_hyperparameters, "lora.rank": "32",
                            "max_steps": "41", "_tuning_objective_metric": "train:eval_loss"},
    }  # fmt: skip
    meta = tuning_metadata(req, training)
    assert meta["tuningJob"] == req.tuning.job_name
    assert meta["bestTrainingJob"] == training["jobName"]
    assert meta["tunedHyperparameters"] == "lora.rank=32 max_steps=41"
    # only the characters CreateModelPackage allows in a metadata value
    assert tuned_values_text({"optimizer": 'a,"b"{c}', "learning_rate": 1e-05}) == (
        "learning_rate=1e-05 optimizer=a__b__c_"
    )
    del base_input["tuning"]
    assert tuning_metadata(_validate(base_input), training) == {}


def test_a_local_trial_gets_its_values_as_sagemaker_renders_them():
    # guards the local trials' inputs: each tuned value as SageMaker hands it to a trial (the
    # categorical value's JSON text, integers and continuous values as decimal numbers), next
    # to the static hyperparameters and the objective key, decoded by the trainer's decoder
    # to the value drawn
    from codetune.train.hyperparameters import to_hyperparameters

    section = {
        "ranges": {
            "lora.rank": {"type": "categorical", "values": [8, 16]},
            "max_steps": {"type": "integer", "min": 2, "max": 9},
            "learning_rate": {"type": "continuous", "min": 1e-5, "max": 1e-3},
        }
    }
    static = to_hyperparameters("cpu-smollm2", {"base_model": "embedded"})
    values = {"lora.rank": 16, "max_steps": 7, "learning_rate": 0.00012}
    hp = tn.trial_hyperparameters(section, static, values)
    assert hp == {
        **static,
        "lora.rank": "16",
        "max_steps": "7",
        "learning_rate": "0.00012",
        "_tuning_objective_metric": tn.objective_metric_name(),
    }
    name, sets = from_hyperparameters(hp)
    assert name == "cpu-smollm2"
    assert sets == [
        'base_model="embedded"',
        "learning_rate=0.00012",
        "lora.rank=16",
        "max_steps=7",
    ]
