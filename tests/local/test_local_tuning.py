"""`codetune run --local` with a tuning section: trials one after another, the best evaluated."""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from codetune.local import LocalRun, execute, stop_server
from codetune.workflow import tuning

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = [
    "bisect.py",
    "heapq.py",
    "textwrap.py",
    "shlex.py",
    "fractions.py",
    "statistics.py",
    "calendar.py",
    "colorsys.py",
    "fnmatch.py",
    "glob.py",
    "graphlib.py",
    "keyword.py",
    "numbers.py",
    "operator.py",
    "queue.py",
    "sched.py",
    "stringprep.py",
    "tabnanny.py",
]  # fmt: skip (as tests/local/test_local_run.py: enough functions for a validation split)


def _input(tmp: Path) -> Path:
    codebase = tmp / "codebase"
    codebase.mkdir()
    for f in FILES:
        shutil.copy(STDLIB / f, codebase / f)
    doc = {
        "baseModel": "embedded",
        "data": {"codebase": str(codebase)},
        "prepare": {
            "config": {
                "tasks": ["bugfix"],
                "max_tokens": 256,
                "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
                "workers": 1,
            }
        },
        "training": {
            "config": "cpu-smollm2",
            "overrides": {
                "max_steps": 2,
                "per_device_batch_size": 2,
                "max_seq_length": 256,
                "eval_max_examples": 2,
                "gradient_checkpointing": False,
                "save_steps": 1,
            },
        },
        # two trials that end apart: a learning rate that barely moves the adapter and one
        # that does
        "tuning": {
            "strategy": "Grid",
            "ranges": {"learning_rate": {"type": "categorical", "values": [1e-6, 2e-3]}},
        },
        "evaluation": {
            "suites": ["bugfix"],
            "limit": 1,
            "thresholds": {
                "min_bugfix_gain": -1,
                "max_p_value": 1,
                "min_bugfix_exact_fix": 0,
                "min_bugfix_parses": 0,
            },
        },  # fmt: skip
        "registration": {"autoApprove": True},
        "deployment": {"enabled": False},
    }
    path = tmp / "input.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two trainings and an evaluation; on a loaded 2-core box, minutes each
def test_two_trials_train_and_the_better_one_is_evaluated(tmp_path):
    # guards: both trials train with the same spec and their tuned value; each is scored by
    # the objective's MetricDefinitions regex over its real output (the value equals the
    # trainer's own validation loss: the regex matches the trainer's line); the lower one is
    # the adapter that is evaluated and registered, and the registry names it
    run = LocalRun(input_path=_input(tmp_path), out=tmp_path / "out", run_name="tune",
                   serve=False, log=lambda s: print(s, file=sys.stderr))  # fmt: skip
    try:
        execute(run)
    finally:
        stop_server(run)
    result = run.results["TrainAdapter"]["tuning"]
    trials = result["trials"]
    assert [t["hyperparameters"] for t in trials] == [
        {"learning_rate": 1e-6},
        {"learning_rate": 2e-3},
    ]
    for t in trials:
        adapter = Path(t["adapter"])
        summary = json.loads((adapter / "training_summary.json").read_text())
        assert summary["config"]["learning_rate"] == t["hyperparameters"]["learning_rate"]
        assert summary["steps"] == 2
        # the trainer prints 6 significant digits; the regex reads them back
        assert t["objective"] == pytest.approx(summary["validation_loss"], rel=1e-5)
    assert trials[0]["objective"] != trials[1]["objective"]
    best = min(trials, key=lambda t: t["objective"])
    assert result["bestTrial"] == best["name"] == tuning.best_trial(trials)["name"]
    report = json.loads((run.eval_dir / "report.json").read_text())
    # (the report names the adapter as the evaluation job saw it: its input/adapter mount)
    evaluated = Path(report["adapter"].removeprefix("file://"))
    assert evaluated.resolve() == Path(best["adapter"]).resolve()
    entry = json.loads(next((run.out / "registry").rglob("*.json")).read_text())
    assert entry["customerMetadata"]["bestTrainingJob"] == best["name"]
    assert entry["customerMetadata"]["tunedHyperparameters"] == (
        f"learning_rate={json.dumps(best['hyperparameters']['learning_rate'])}"
    )
    assert entry["modelDataUrl"] == f"file://{best['adapter']}"
