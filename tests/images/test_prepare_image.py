"""PrepareDataset in the training image, as a SageMaker Processing job runs it."""

from __future__ import annotations

import json

import harness
from conftest import states_json


def test_prepare_job_writes_the_dataset_into_sagemakers_output_mount(
    train_image, run_request, codebase, tmp_path
):
    # Guards: the PrepareDataset step as the state machine starts it — ContainerEntrypoint
    # ["prepare"], no arguments, CODETUNE_RUN_ID/CODETUNE_PREPARE_CONFIG in the environment,
    # the codebase at /opt/ml/processing/input/code and the dataset written into the
    # root-owned 0755 directory SageMaker mounts at /opt/ml/processing/output/dataset (a
    # mount point: it cannot be renamed or replaced), as root under Docker's seccomp profile.
    out = harness.sagemaker_dir(tmp_path / "sm" / "dataset")
    config = harness.sagemaker_dir(tmp_path / "sm" / "config")
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    job = harness.Job(
        image=train_image,
        entrypoint="prepare",
        args=[],
        mounts={
            "/opt/ml/processing/input/code": codebase,
            "/opt/ml/processing/output/dataset": out,
            "/opt/ml/config": config,
        },
        read_only={"/opt/ml/processing/input/code", "/opt/ml/config"},
        env={
            "CODETUNE_RUN_ID": run_request["runId"],
            "CODETUNE_PREPARE_CONFIG": states_json(run_request["prepare"]["config"]),
        },
    )
    res = job.run(timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_files"] == 30 and manifest["config"]["tasks"] == ["bugfix"]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows and all(r["task"] == "bugfix" for r in rows)
