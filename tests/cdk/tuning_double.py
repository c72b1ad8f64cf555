"""SageMaker's hyperparameter tuning job as a test double inside moto.

moto 5.2.5 stores a CreateHyperParameterTuningJob request and describes it with a fixed
``BestTrainingJob`` ("FakeTrainingJobName", an Accuracy of 1, no trials), and it runs no
``.sync`` task. The double replaces moto's create/describe with what SageMaker does, as far
as the workflow can observe it:

- the request is refused (``ValidationException``) when it breaks botocore's input shape or
  SageMaker's documented rules (``awscheck.limits``), as SageMaker refuses it;
- each trial is a training job created in moto's SageMaker backend from the
  ``TrainingJobDefinition`` — its static hyperparameters, the trial's tuned values (as strings:
  the categorical values as given, integers and continuous values as decimal numbers) and
  ``_tuning_objective_metric`` — named ``<tuning job>-<nnn>-<8 hex>`` like SageMaker's;
- a trial's objective is read from its log (the test gives each trial the text its trainer
  would print) with the regex of the objective's own MetricDefinitions entry, last match;
- ``BestTrainingJob`` is the trial with the lowest (Minimize) or highest objective, shaped as
  botocore's ``HyperParameterTrainingJobSummary``.

The trial values are not SageMaker's search (Bayesian is SageMaker's own): trial i takes the
i-th categorical value (cyclically), and min or max of a numeric range alternately.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from awscheck import limits

TUNING_OBJECTIVE_KEY = "_tuning_objective_metric"


class TuningDouble:
    def __init__(self, trial_logs: list[str]):
        self.trial_logs = trial_logs  # what trial i prints, in order
        self.jobs: dict[str, dict] = {}  # name -> {"request", "trials"}

    def install(self, monkeypatch) -> None:
        from moto.sagemaker.models import SageMakerModelBackend

        double = self

        def create(backend, **kw):
            return double.create(backend, kw)

        def describe(backend, hyper_parameter_tuning_job_name):
            return double.describe(backend, hyper_parameter_tuning_job_name)

        monkeypatch.setattr(SageMakerModelBackend, "create_hyper_parameter_tuning_job", create)
        monkeypatch.setattr(SageMakerModelBackend, "describe_hyper_parameter_tuning_job", describe)

    # -- the API --------------------------------------------------------------------------

    def create(self, backend, kw: dict) -> str:
        from moto.sagemaker.exceptions import ValidationError

        request = {
            "HyperParameterTuningJobName": kw["hyper_parameter_tuning_job_name"],
            "HyperParameterTuningJobConfig": kw["hyper_parameter_tuning_job_config"],
            "TrainingJobDefinition": kw["training_job_definition"],
        }
        if kw.get("tags"):
            request["Tags"] = kw["tags"]
        problems = limits.problems("sagemaker", "CreateHyperParameterTuningJob", request)
        if problems:
            raise ValidationError(message="; ".join(problems))
        name = request["HyperParameterTuningJobName"]
        config, definition = (
            request["HyperParameterTuningJobConfig"],
            request["TrainingJobDefinition"],
        )
        objective = config["HyperParameterTuningJobObjective"]
        (regex,) = [
            m["Regex"]
            for m in definition["AlgorithmSpecification"]["MetricDefinitions"]
            if m["Name"] == objective["MetricName"]
        ]
        n = config["ResourceLimits"]["MaxNumberOfTrainingJobs"]
        trials = []
        for i in range(n):
            tuned = _trial_values(config["ParameterRanges"], i)
            trial = f"{name}-{i + 1:03d}-{hashlib.sha256(f'{name}{i}'.encode()).hexdigest()[:8]}"
            hp = {**definition.get("StaticHyperParameters", {}), **tuned,
                  TUNING_OBJECTIVE_KEY: objective["MetricName"]}  # fmt: skip
            backend.create_training_job(
                training_job_name=trial,
                hyper_parameters=hp,
                algorithm_specification=definition["AlgorithmSpecification"],
                role_arn=definition["RoleArn"],
                input_data_config=definition.get("InputDataConfig", []),
                output_data_config=definition["OutputDataConfig"],
                resource_config=definition.get("ResourceConfig", {}),
                vpc_config=definition.get("VpcConfig"),
                stopping_condition=definition["StoppingCondition"],
                tags=[],
                enable_network_isolation=definition.get("EnableNetworkIsolation", False),
                enable_inter_container_traffic_encryption=definition.get(
                    "EnableInterContainerTrafficEncryption", False
                ),
                enable_managed_spot_training=definition.get("EnableManagedSpotTraining", False),
                checkpoint_config=definition.get("CheckpointConfig"),
                debug_hook_config=None,
                debug_rule_configurations=None,
                tensor_board_output_config=None,
                experiment_config=None,
            )
            values = re.findall(regex, self.trial_logs[i % len(self.trial_logs)])
            trials.append({"name": trial, "tuned": tuned, "hp": hp,
                           "objective": float(values[-1]) if values else None})  # fmt: skip
        self.jobs[name] = {"request": request, "trials": trials}
        return f"arn:aws:sagemaker:{backend.region_name}:{backend.account_id}:hyper-parameter-tuning-job/{name.lower()}"

    def describe(self, backend, name: str) -> dict:
        job = self.jobs[name]
        config = job["request"]["HyperParameterTuningJobConfig"]
        objective = config["HyperParameterTuningJobObjective"]
        trials = job["trials"]
        scored = [t for t in trials if t["objective"] is not None]
        now = datetime(2026, 12, 1, tzinfo=UTC)
        arn = f"arn:aws:sagemaker:{backend.region_name}:{backend.account_id}"
        out = {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobArn": f"{arn}:hyper-parameter-tuning-job/{name.lower()}",
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": job["request"]["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": "Completed",
            "CreationTime": now,
            "TrainingJobStatusCounters": {
                "Completed": len(trials),
                "InProgress": 0,
                "RetryableError": 0,
                "NonRetryableError": 0,
                "Stopped": 0,
            },
            "ObjectiveStatusCounters": {
                "Succeeded": len(scored),
                "Pending": 0,
                "Failed": len(trials) - len(scored),
            },
        }
        if not scored:  # no trial reported the objective: SageMaker fails the tuning job
            out["HyperParameterTuningJobStatus"] = "Failed"
            out["FailureReason"] = (
                f"No training job reported the objective metric {objective['MetricName']}"
            )
            return out
        pick = min if objective["Type"] == "Minimize" else max
        best = pick(scored, key=lambda t: t["objective"])
        out["BestTrainingJob"] = {
            "TrainingJobName": best["name"],
            "TrainingJobArn": f"{arn}:training-job/{best['name'].lower()}",
            "TuningJobName": name,
            "CreationTime": now,
            "TrainingJobStatus": "Completed",
            "TunedHyperParameters": best["tuned"],
            "FinalHyperParameterTuningJobObjectiveMetric": {
                "Type": objective["Type"],
                "MetricName": objective["MetricName"],
                "Value": best["objective"],
            },
            "ObjectiveStatus": "Succeeded",
        }
        return out


def _trial_values(ranges: dict, i: int) -> dict[str, str]:
    out = {}
    for r in ranges.get("CategoricalParameterRanges", []):
        out[r["Name"]] = r["Values"][i % len(r["Values"])]
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for r in ranges.get(kind, []):
            out[r["Name"]] = r["MinValue"] if i % 2 == 0 else r["MaxValue"]
    return out
