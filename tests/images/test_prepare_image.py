"""PrepareDataset in the training image, as a SageMaker Processing job runs it."""

from __future__ import annotations

import json


def test_prepare_job_writes_the_dataset_into_sagemakers_output_mount(prepare_run):
    # Guards: the PrepareDataset step as the state machine starts it — ContainerEntrypoint
    # ["prepare"], ValidateRequest's prepare.arguments, CODETUNE_RUN_ID in the environment,
    # the codebase at /opt/ml/processing/input/code and the dataset written into the
    # root-owned 0755 directory SageMaker mounts at /opt/ml/processing/output/dataset (a
    # mount point: it cannot be renamed or replaced), as root under Docker's seccomp profile.
    assert prepare_run.result.returncode == 0, prepare_run.tail()
    out = prepare_run.dirs["dataset"]
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_files"] == 30 and manifest["config"]["tasks"] == ["bugfix"]
    for split in ("train", "validation", "test"):
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert rows and all(r["task"] == "bugfix" for r in rows), split
