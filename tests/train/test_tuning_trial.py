"""A training job started by a tuning job: its hyperparameters and its checkpoints."""

from __future__ import annotations

import json

from codetune.paths import SageMakerPaths
from codetune.train import sagemaker
from codetune.train.hyperparameters import to_hyperparameters


def _layout(tmp_path, hp: dict) -> SageMakerPaths:
    paths = SageMakerPaths(tmp_path)
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps(hp))
    (paths.channel("train")).mkdir(parents=True)
    return paths


def _run(tmp_path, monkeypatch, hp: dict) -> dict:
    seen = {}

    def fake_training(config, data, out, *, base_model, checkpoints_dir):
        seen.update(config=config, checkpoints=checkpoints_dir)

    monkeypatch.setattr("codetune.train.runner.run_training", fake_training)
    assert sagemaker._train(_layout(tmp_path, hp)) == 0
    return seen


def test_trials_keep_their_checkpoints_apart(tmp_path, monkeypatch):
    # guards: every trial of a tuning job gets the same CheckpointConfig (one S3 prefix, synced
    # into /opt/ml/checkpoints); each trial resumes only from its own directory in it, named
    # by its hyperparameters, so a restarted spot trial finds its own checkpoints again
    static = to_hyperparameters("cpu-smollm2", {"max_steps": 3})
    trial = {**static, "lora.rank": "8", "_tuning_objective_metric": "train:eval_loss"}
    other = {**trial, "lora.rank": "32"}
    first = _run(tmp_path / "a", monkeypatch, trial)
    again = _run(tmp_path / "b", monkeypatch, trial)
    second = _run(tmp_path / "c", monkeypatch, other)
    assert first["config"].lora.rank == 8 and second["config"].lora.rank == 32
    assert first["checkpoints"].parent == tmp_path / "a" / "checkpoints"
    assert first["checkpoints"].name == again["checkpoints"].name != second["checkpoints"].name
    # a single training job keeps the checkpoint directory itself
    single = _run(tmp_path / "d", monkeypatch, static)
    assert single["checkpoints"] == tmp_path / "d" / "checkpoints"
