"""One training knob followed end to end on the local path: ``training.overrides.lora.rank``
in a run input -> ValidateRequest -> the CreateTrainingJob input it renders
(``training.job``) -> the container layout TrainAdapter lays out from it
(``hyperparameters.json``, the channels) -> the training image's entrypoint -> the adapter's
``adapter_config.json`` ``r``. (The moto-executed AWS path: tests/cdk/test_trace.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from codetune.local import LocalRun, StepFailed, execute, step_train, validate

RANK = 4  # not the config's (cpu-smollm2: 16), so only the override can put it there


def train_fixtures(repo_root: Path):
    sys.path.insert(0, str(repo_root / "tests" / "train"))
    try:
        import train_fixtures
    finally:
        sys.path.pop(0)
    return train_fixtures


def tiny_dataset(repo_root: Path, dest: Path) -> Path:
    return train_fixtures(repo_root).write_dataset(dest, n_train=4, n_val=2)


def _run(tmp_path: Path, dataset: Path, overrides: dict) -> LocalRun:
    doc = {
        "baseModel": "embedded",
        "data": {"dataset": str(dataset)},
        "training": {"config": "cpu-smollm2", "overrides": overrides},
        "deployment": {"enabled": False},
    }
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    return LocalRun(input_path=path, out=tmp_path / "out", run_name="trace", serve=False,
                    log=lambda s: print(s, file=sys.stderr))  # fmt: skip


@pytest.mark.slow
def test_lora_rank_reaches_the_adapter_through_the_jobs_own_inputs(
    repo_root, tmp_path, monkeypatch
):
    # guards the local TrainAdapter: it trains from ValidateRequest's CreateTrainingJob input
    # through the image's entrypoint (no argv of its own), so the rank in the run input is the
    # adapter's r, and hyperparameters.json is the request's HyperParameters byte for byte
    data = tiny_dataset(repo_root, tmp_path / "dataset")
    monkeypatch.setenv("CODETUNE_TORCH_THREADS", "1")  # shared CPU: see train_fixtures
    tiny = train_fixtures(repo_root).TINY_RUN_OVERRIDES
    run = _run(tmp_path, data, {**tiny, "lora.rank": RANK, "lora.alpha": 2 * RANK})
    run.request = validate(run.input_path, run.out, run.run_name)
    job = run.request.training.job
    assert json.loads(job["HyperParameters"]["codetune_overrides"])["lora.rank"] == RANK
    result = step_train(run)
    root = run.run_dir / "jobs" / job["TrainingJobName"]
    written = (root / "input" / "config" / "hyperparameters.json").read_text()
    assert json.loads(written) == job["HyperParameters"]
    for channel in ("train", "validation"):
        assert (root / "input" / "data" / channel).resolve() == data.resolve()
    adapter = Path(result["adapter"])
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == RANK
    summary = json.loads((adapter / "training_summary.json").read_text())
    assert summary["config"]["lora"]["rank"] == RANK and summary["steps"] == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lora.rank": 0}, "lora.rank must be >= 1, got 0"),
        ({"lora.rnak": 8}, "unknown key(s) rnak; known keys: "),
    ],
)
def test_a_rank_the_trainer_refuses_stops_the_run_at_validate_request(
    repo_root, tmp_path, overrides, message
):
    # guards "validated once": the local run refuses before any job starts, at
    # ValidateRequest, with the trainer's own words
    from codetune.train.config import load_train_config

    data = tiny_dataset(repo_root, tmp_path / "dataset")
    run = _run(tmp_path, data, overrides)
    with pytest.raises(StepFailed) as e:
        execute(run)
    with pytest.raises(Exception) as trainer:
        load_train_config("cpu-smollm2", {**overrides, "base_model": "embedded"})
    assert message in str(trainer.value)
    assert e.value.step == "ValidateRequest"
    assert f"$.training.overrides: the trainer refuses it: {trainer.value}" in e.value.cause
    assert not (tmp_path / "out" / "runs").exists()
