"""`codetune run --local`: the whole workflow on this machine, with a tiny schedule.

The end-to-end test runs every step for real (prepare on real stdlib files, 4-bit QLoRA
training, sandboxed evaluation, gate, registry, server, smoke test) with shapes small enough
for CI, then checks each step's artifacts and asks the running server for an answer.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from codetune.local import STEPS, LocalRun, StepFailed, execute, stop_server

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = [
    "bisect.py", "heapq.py", "textwrap.py", "shlex.py", "fractions.py", "statistics.py",
    "calendar.py", "colorsys.py", "fnmatch.py", "glob.py", "graphlib.py", "keyword.py",
    "numbers.py", "operator.py", "queue.py", "sched.py", "stringprep.py", "tabnanny.py",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _codebase(root: Path) -> Path:
    cb = root / "codebase"
    cb.mkdir()
    for f in FILES:
        shutil.copy(STDLIB / f, cb / f)
    return cb


def _input(tmp: Path, codebase: Path, **over) -> Path:
    doc = {
        "schemaVersion": "1",
        "baseModel": "embedded",
        "data": {"codebase": str(codebase)},
        # two instances: the sharded prepare + merge path, as the state machine runs it
        "prepare": {
            "instanceCount": 2,
            "config": {
                "tasks": ["bugfix"],
                "max_tokens": 256,
                "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
                "workers": 1,
            },
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
        # The mechanics are under test here, not the model's quality: a tiny schedule cannot
        # beat the base model, so the checks are set so that they cannot trigger.
        "evaluation": {
            "suites": ["humaneval", "bugfix"],
            "limit": 2,
            "thresholds": {
                "min_bugfix_gain": -1,
                "max_p_value": 1,  # 2 problems: no sign test could decide
                "max_humaneval_regression": 1,
                "min_bugfix_exact_fix": 0,
                "min_bugfix_parses": 0,
                "min_humaneval_pass1": 0,
            },
        },
        "registration": {"autoApprove": True},
        "deployment": {"enabled": True, "endpointName": "codetune-local", "adapterName": "stdlib"},
    }
    for k, v in over.items():
        doc[k] = v
    path = tmp / "input.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run with the server left up for the HTTP checks."""
    tmp = tmp_path_factory.mktemp("local")
    run = LocalRun(
        input_path=_input(tmp, _codebase(tmp)),
        out=tmp / "out",
        run_name="e2e",
        port=_free_port(),
        log=lambda s: print(s, file=sys.stderr),
    )
    try:
        summary = execute(run)
        yield run, summary
    finally:
        stop_server(run)


@pytest.mark.slow
def test_every_step_leaves_its_artifacts(finished_run):
    # Guards: each state of the workflow produced its contract's outputs.
    run, summary = finished_run
    assert list(summary["steps"]) == list(STEPS[1:])
    d = run.run_dir
    assert json.loads((d / "request.json").read_text())["runId"] == run.request.run_id
    for f in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (run.dataset_dir / f).is_file(), f
    assert any(
        json.loads(line)["task"] == "bugfix" for line in (run.dataset_dir / "test.jsonl").open()
    )
    manifest = json.loads((run.dataset_dir / "manifest.json").read_text())
    assert len(manifest["merged_from"]) == 2 and manifest["counts"]["task"]["bugfix"] > 0
    assert run.results["PrepareDataset"]["shards"] == 2
    for f in ("adapter_config.json", "adapter_model.safetensors", "training_summary.json"):
        assert (run.adapter_dir / f).is_file(), f
    assert json.loads((run.adapter_dir / "training_summary.json").read_text())["steps"] == 2
    report = json.loads((run.eval_dir / "report.json").read_text())
    assert set(report["suites"]) == {"humaneval", "bugfix"}
    assert (run.eval_dir / "report.html").is_file()
    assert summary["gate"]["passed"] is True
    entry = json.loads(Path(run.results["RegisterAdapter"]["modelPackage"]).read_text())
    assert entry["approvalStatus"] == "Approved"
    assert entry["customerMetadata"]["runId"] == run.request.run_id
    smoke = run.results["SmokeTest"]
    assert smoke["adapterModel"] == "stdlib" and smoke["baseModel"] != "stdlib"
    for step in STEPS[1:6]:
        assert (d / "steps" / f"{step}.json").is_file(), step


@pytest.mark.slow
def test_server_answers_through_the_adapter(finished_run):
    # Guards: the run ends with a live server answering from the trained adapter.
    run, _ = finished_run
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "def add(a, b):"}],
            "model": "stdlib",
            "max_tokens": 8,
        }
    ).encode()
    req = urllib.request.Request(
        run.base_url + "/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        answer = json.loads(r.read())
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "stdlib"
    assert answer["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_rerun_skips_completed_steps(finished_run):
    # Guards: step caching — a re-run of the same run name does no work for finished steps.
    run, _ = finished_run
    again = LocalRun(
        input_path=run.input_path, out=run.out, run_name="e2e", serve=False, log=lambda s: None
    )
    summary = execute(again)
    cached = {s for s, t in summary["steps"].items() if t["cached"]}
    assert {
        "PrepareDataset",
        "TrainAdapter",
        "EvaluateAdapter",
        "QualityGate",
        "RegisterAdapter",
    } <= cached


def test_failing_step_is_named(tmp_path):
    # Guards: an empty codebase stops the run at PrepareDataset with a readable cause.
    empty = tmp_path / "empty"
    empty.mkdir()
    run = LocalRun(
        input_path=_input(tmp_path, empty),
        out=tmp_path / "out",
        run_name="bad",
        serve=False,
        log=lambda s: None,
    )
    with pytest.raises(StepFailed) as e:
        execute(run)
    assert e.value.step == "PrepareDataset"
    assert not (run.run_dir / "steps" / "PrepareDataset.json").exists()


def test_progress_names_the_step_its_time_and_the_next(tmp_path):
    # guards: a person reading the run sees which step runs (of how many), since when, what
    # comes next, how long a step has been running (the heartbeat) and after how long it failed
    empty = tmp_path / "empty"
    empty.mkdir()
    lines: list[str] = []
    run = LocalRun(
        input_path=_input(tmp_path, empty),
        out=tmp_path / "out",
        run_name="bad",
        serve=False,
        log=lines.append,
        heartbeat_s=0.01,
    )
    with pytest.raises(StepFailed):
        execute(run)
    first = next(ln for ln in lines if ln.startswith("[1/7 PrepareDataset]"))
    assert re.fullmatch(
        r"\[1/7 PrepareDataset\] running since \d\d:\d\d:\d\d; next: TrainAdapter", first
    )
    assert any(re.fullmatch(r"\[1/7 PrepareDataset\] still running after \d+s", ln) for ln in lines)
    assert re.fullmatch(r"\[1/7 PrepareDataset\] failed after \d+s", lines[-1])


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "codetune.cli", "run", *args], capture_output=True, text=True
    )


def test_validate_only_prints_the_resolved_request(repo_root, tmp_path):
    # Guards: --validate-only on the shipped local input resolves defaults and exits 0.
    res = _cli(
        "--local",
        "--input",
        str(repo_root / "examples" / "run-input.local.json"),
        "--out",
        str(tmp_path),
        "--validate-only",
    )
    assert res.returncode == 0, res.stderr
    req = json.loads(res.stdout)
    assert req["training"]["config"] == "cpu-smollm2"
    assert req["training"]["instanceType"].startswith("ml.")
    assert not (tmp_path / "runs").exists()  # validation writes nothing


def test_validate_only_reports_every_violation(tmp_path):
    # Guards: a bad input prints each problem with its path and exits 2.
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"baseModel": 3, "training": {"config": "cpu-smollm2", "spot": "yes"}})
    )
    res = _cli("--local", "--input", str(bad), "--out", str(tmp_path), "--validate-only")
    assert res.returncode == 2
    assert (
        "$.baseModel" in res.stderr and "$.training.spot" in res.stderr and "$.data" in res.stderr
    )
