"""TrainAdapter in the training image, as a SageMaker training job runs it."""

from __future__ import annotations

import json
import re

from conftest import training_job

from codetune.metrics import metric_definitions


def test_training_job_writes_the_adapter_into_sagemakers_model_dir(train_run, run_request):
    # Guards: `docker run IMAGE train` with hyperparameters.json exactly as ValidateRequest
    # encodes the run's training settings, the train/validation channels, resourceconfig.json,
    # and SageMaker's root-owned 0755 /opt/ml/model, /opt/ml/output and /opt/ml/checkpoints,
    # as root under Docker's seccomp profile and capabilities without network: two optimizer
    # steps on the embedded model, the adapter in /opt/ml/model, metric lines that the
    # training job's MetricDefinitions read.
    assert train_run.result.returncode == 0, train_run.tail()
    model = train_run.dirs["model"]
    assert {"adapter_config.json", "adapter_model.safetensors", "training_summary.json"} <= {
        p.name for p in model.iterdir()
    }
    assert not (train_run.dirs["output"] / "failure").exists()
    summary = json.loads((model / "training_summary.json").read_text())
    overrides = run_request["training"]["overrides"]
    assert summary["steps"] == overrides["max_steps"] == 2
    assert summary["config"]["max_seq_length"] == overrides["max_seq_length"]
    assert summary["config"]["per_device_batch_size"] == overrides["per_device_batch_size"]
    assert summary["base_model"] == "embedded" and summary["world_size"] == 1
    adapter = json.loads((model / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    # SageMaker charts what the MetricDefinitions' regexes find in the job's output.
    found = {
        m["Name"] for m in metric_definitions() if re.search(m["Regex"], train_run.output, re.M)
    }
    assert {"train:loss", "train:eval_loss", "train:learning_rate"} <= found, found


def test_training_job_error_is_written_to_the_failure_file(train_image, run_request, tmp_path):
    # Guards: a training job that fails says why in /opt/ml/output/failure (SageMaker shows
    # that file as the job's FailureReason), written into SageMaker's root-owned mount; here
    # the channels hold no dataset.
    empty = tmp_path / "no-dataset"
    empty.mkdir()
    job, dirs = training_job(train_image, run_request, empty, tmp_path / "sm")
    res = job.run(timeout=300)
    assert res.returncode != 0, res.stdout[-2000:] + res.stderr[-2000:]
    failure = dirs["output"] / "failure"
    assert failure.is_file(), res.stderr[-3000:]
    reason = failure.read_text()
    assert "train.jsonl" in reason, reason
    assert "train: error:" in res.stderr and "train.jsonl" in res.stderr
    assert not any(dirs["model"].iterdir())
