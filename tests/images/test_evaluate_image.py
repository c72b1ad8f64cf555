"""EvaluateAdapter in the training image, as a SageMaker Processing job runs it: the adapter
from the training job, generated code executed under the sandbox's unprivileged layers
(bubblewrap cannot create namespaces under Docker's seccomp profile without CAP_SYS_ADMIN)."""

from __future__ import annotations

import json

import harness
import pytest
from conftest import JobRun, timed

from cdk.constructs.workflow import EVAL_SANDBOX_REQUIRE
from codetune.evaluate.report import load_report

# A custom suite of one problem and completions that attack the machine before answering it
# correctly: "pass" means the attack went through, so each must end otherwise, with the error
# of the layer that stops it. The correct answer alone passes (the harness can pass).
TASK = {"task_id": "inc", "prompt": 'def inc(x):\n    """x + 1"""\n',
        "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "inc"}  # fmt: skip
ANSWER = "def inc(x):\n    return x + 1\n"
SHARED = "/srv/shared"  # a world-writable host directory in the container
HOSTILE = {
    "correct": "",
    # seccomp: no sockets but AF_UNIX (the job runs without network isolation on AWS
    # unless the base model is in S3)
    "inet-socket": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)\n",
    "inet6-socket": "import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n",
    # the uid switch: the job's root-owned output mount and the image's files
    "write-job-output": "open('/opt/ml/processing/output/eval/escaped', 'w').write('x')\n",
    "write-etc": "open('/etc/escaped', 'w').write('x')\n",
    # Landlock: world-writable directories outside the program's work dir
    "write-shared": f"open('{SHARED}/escaped', 'w').write('x')\n",
    "write-tmp": "open('/tmp/escaped', 'w').write('x')\n",
    # rlimits: the process count; the bomb is killed at the timeout
    "fork-count": (
        "import os, time\nn = 0\nfor _ in range(300):\n    pid = os.fork()\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\n"
    ),
    "fork-bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
    "        pass\n",
    "correct-after": "",
}
CONTAINED = {  # how each attack must end: status, text in the detail
    "inet-socket": ("error", "PermissionError: [Errno 1] Operation not permitted"),
    "inet6-socket": ("error", "PermissionError: [Errno 1] Operation not permitted"),
    "write-job-output": ("error", "PermissionError"),
    "write-etc": ("error", "PermissionError"),
    "write-shared": ("error", "PermissionError"),
    "write-tmp": ("error", "PermissionError"),
    "fork-count": ("error", "BlockingIOError: [Errno 11] Resource temporarily unavailable"),
    "fork-bomb": ("timeout", ""),
}


def evaluate_job(image: str, run_request: dict, root, archive=None, dataset=None):
    """EvaluateAdapter as the state machine creates it (createProcessingJob): entrypoint
    ["evaluate"], the request's evaluation.arguments as ContainerArguments, the run id and
    base model in the environment, the training job's model.tar.gz at input/adapter, the
    dataset at input/dataset, output/eval. Returns the job and its host directories."""
    dirs = {n: harness.sagemaker_dir(root / n) for n in ("adapter", "eval", "config")}
    if archive is not None:
        (dirs["adapter"] / "model.tar.gz").write_bytes(archive.read_bytes())
    (dirs["config"] / "resourceconfig.json").write_text(
        json.dumps(harness.processing_resource_config())
    )
    ev = run_request["evaluation"]
    job = harness.Job(
        image=image,
        entrypoint="evaluate",
        args=list(ev["arguments"]),
        mounts={
            "/opt/ml/processing/input/adapter": dirs["adapter"],
            "/opt/ml/processing/output/eval": dirs["eval"],
            "/opt/ml/config": dirs["config"],
            **({"/opt/ml/processing/input/dataset": dataset} if dataset else {}),
        },
        read_only={
            "/opt/ml/processing/input/adapter",
            "/opt/ml/processing/input/dataset",
            "/opt/ml/config",
        },
        env={
            "CODETUNE_RUN_ID": run_request["runId"],
            "CODETUNE_BASE_MODEL": run_request["baseModel"]["id"],
            "CODETUNE_ADAPTER_URI": run_request["paths"]["modelData"],
            "CODETUNE_SANDBOX_REQUIRE": EVAL_SANDBOX_REQUIRE,
        },
    )
    return job, dirs


@pytest.fixture(scope="module")
def evaluate_run(train_image, run_request, model_archive, dataset, tmp_path_factory) -> JobRun:
    root = tmp_path_factory.mktemp("evaluate")
    job, dirs = evaluate_job(train_image, run_request, root, model_archive, dataset)
    return timed(job, 1200, dirs, root / "evaluate.log")


def test_evaluation_job_writes_a_valid_report_with_the_sandbox_layers(evaluate_run, run_request):
    # Guards: the EvaluateAdapter step as SageMaker runs it writes report.json into its
    # root-owned output mount (uid 1000 could not), the report validates against
    # schemas/report.schema.json inside the installed package (no schemas there: "not
    # found" after all the generation), and generated code ran under the seccomp filter and
    # Landlock with bubblewrap unavailable (Docker's profile), which report.json records.
    assert evaluate_run.result.returncode == 0, evaluate_run.tail()
    out = evaluate_run.dirs["eval"]
    report = load_report(out / "report.json")
    assert report["runId"] == run_request["runId"]
    assert set(report["suites"]) == set(run_request["evaluation"]["suites"])
    assert report["settings"]["limits"]["humaneval"] == run_request["evaluation"]["limit"]
    sandbox = report["settings"]["sandbox"]
    assert sandbox["layers"][:2] == ["seccomp", "landlock"], sandbox
    assert "bwrap" not in sandbox["layers"] and "uid-switch" in sandbox["layers"], sandbox
    assert sandbox["required"] == EVAL_SANDBOX_REQUIRE.split(","), sandbox
    assert "Creating new namespace failed" in evaluate_run.output  # why bwrap is not used
    assert (out / "samples.jsonl").is_file() and (out / "report.html").is_file()


@pytest.fixture(scope="module")
def hostile_run(train_image, run_request, tmp_path_factory) -> JobRun:
    """`evaluate score` of HOSTILE in the image, under the evaluation job's conditions."""
    root = tmp_path_factory.mktemp("hostile")
    inputs = harness.sagemaker_dir(root / "input")
    (inputs / "suite.jsonl").write_text(json.dumps(TASK) + "\n")
    (inputs / "completions.jsonl").write_text(
        "".join(json.dumps({"task_id": "inc", "completion": attack + ANSWER}) + "\n"
                for attack in HOSTILE.values())
    )  # fmt: skip
    shared = root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    job, dirs = evaluate_job(train_image, run_request, root)
    job.args = ["score", "--suite", "custom", "--custom-suite", "/opt/ml/processing/input/hostile/suite.jsonl",
                "--completions", "/opt/ml/processing/input/hostile/completions.jsonl",
                "--out", "/opt/ml/processing/output/eval", "--timeout", "4",
                # one at a time: the last correct answer runs after the fork bomb was killed
                "--workers", "1"]  # fmt: skip
    job.mounts |= {"/opt/ml/processing/input/hostile": inputs, SHARED: shared}
    job.read_only.add("/opt/ml/processing/input/hostile")
    dirs["shared"] = shared
    return timed(job, 300, dirs, root / "hostile.log")


def test_hostile_completions_are_contained_in_the_evaluation_image(hostile_run):
    # Guards: inside the image, as root under Docker's seccomp profile and capabilities with
    # bubblewrap unavailable, the sandbox stops network sockets (seccomp), writes outside the
    # program's work dir (uid switch, Landlock) and fork bombs (rlimits, timeout); a correct
    # answer still passes, before and after the attacks.
    assert hostile_run.result.returncode == 0, hostile_run.tail()
    out = hostile_run.dirs["eval"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sandbox"]["layers"][:2] == ["seccomp", "landlock"], summary["sandbox"]
    assert "bwrap" not in summary["sandbox"]["layers"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    results = dict(zip(HOSTILE, rows, strict=True))
    assert results["correct"]["status"] == "pass", results["correct"]
    assert results["correct-after"]["status"] == "pass", results["correct-after"]
    for name, (status, text) in CONTAINED.items():
        r = results[name]
        assert r["status"] == status and text in r["detail"], (name, r)
    assert not (out / "escaped").exists()
    assert not any(hostile_run.dirs["shared"].iterdir())
