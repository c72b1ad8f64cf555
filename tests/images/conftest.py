"""Fixtures of the image tests: the images built once per session, SageMaker's run request,
and the jobs of one run in the order the state machine runs them (prepare -> train ->
evaluate -> serve), each job's output handed to the next the way S3 hands it over.

Every test here is marked ``images`` (select with ``-m images``) and ``slow``. They skip only
when podman is missing or unusable (it is installed by ``make setup`` as root, so in CI they
run); anything else missing from make setup is an error.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # harness.py

import harness  # noqa: E402

# What a run input through ValidateRequest becomes on AWS (artifact bucket, S3 codebase):
# the state machine hands the jobs parts of this request verbatim. The endpoint is one model
# (the adapter as its model data) on a CPU instance type: the test image is the CPU build.
RUN_INPUT = {
    "baseModel": "embedded",
    "data": {"codebase": "s3://codetune-artifacts-123456789012/codebases/stdlib/"},
    "prepare": {"config": {"tasks": ["bugfix"], "max_tokens": 256, "max_files": 30}},
    "training": {
        "config": "cpu-smollm2",
        "overrides": {
            "max_steps": 2,
            "max_seq_length": 256,
            "per_device_batch_size": 2,
            "gradient_checkpointing": False,
            "eval_max_examples": 4,
        },
    },
    "evaluation": {"suites": ["humaneval", "bugfix"], "limit": 1},
    "deployment": {"mode": "single-model", "instanceType": "ml.m5.xlarge"},
}


# A test's fixtures may run several jobs (the evaluation test alone: prepare, train,
# evaluate); each job has its own timeout, this is their sum with room for the builds.
TIMEOUT_S = 3600


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.images)
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(TIMEOUT_S))


@pytest.fixture(scope="session")
def podman():
    reason = harness.unavailable()
    if reason:
        pytest.skip(reason)
    harness.check_setup()


@pytest.fixture(scope="session")
def train_image(podman) -> str:
    return harness.build("train")[0]


@pytest.fixture(scope="session")
def serve_image(podman) -> str:
    return harness.build("serve")[0]


@pytest.fixture(scope="session")
def request_obj():
    """ValidateRequest's RunRequest for RUN_INPUT."""
    from codetune.workflow import validate_run_input

    return validate_run_input(
        json.loads(json.dumps(RUN_INPUT)),
        execution_name="image-test",
        artifact_bucket="codetune-artifacts-123456789012",
    )


@pytest.fixture(scope="session")
def run_request(request_obj) -> dict:
    """ValidateRequest's output for RUN_INPUT (camelCase JSON, as the state carries it)."""
    return request_obj.to_dict()


@dataclass
class JobRun:
    """A finished container run and the host directories SageMaker would have mounted."""

    result: object  # subprocess.CompletedProcess
    seconds: float
    dirs: dict[str, Path]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    def tail(self, n: int = 3000) -> str:
        return self.result.stdout[-n:] + "\n" + self.result.stderr[-n:]


def timed(job: harness.Job, timeout: float, dirs: dict[str, Path], log: Path) -> JobRun:
    """Run ``job``; its output is also kept in ``log``."""
    t0 = time.monotonic()
    res = job.run(timeout=timeout)
    seconds = time.monotonic() - t0
    log.write_text(
        f"$ {' '.join(job.command())}\n{res.stdout}\n{res.stderr}\nrc={res.returncode} {seconds:.1f} s\n"
    )
    return JobRun(res, seconds, dirs)


# Standard-library modules as the codebase, chosen so that the prepare split (a hash of each
# file's path) gives every split a file: training and validation examples for TrainAdapter,
# test examples for the evaluation's bugfix suite.
CODEBASE = {"train": ("textwrap", "shlex", "difflib"), "validation": ("copyreg",),
            "test": ("nturl2path", "numbers")}  # fmt: skip


@pytest.fixture(scope="session")
def codebase(tmp_path_factory) -> Path:
    """A small real codebase, as S3 would hand it over."""
    import importlib

    from codetune.data.config import PrepareConfig
    from codetune.data.pipeline import split_of

    cfg = PrepareConfig()
    code = harness.sagemaker_dir(tmp_path_factory.mktemp("prepare") / "code")
    for split, modules in CODEBASE.items():
        for name in modules:
            src = Path(importlib.import_module(name).__file__)
            assert split_of(src.name, cfg.split, cfg.seed) == split, (name, split)
            (code / src.name).write_bytes(src.read_bytes())
    return code


@pytest.fixture(scope="session")
def prepare_run(train_image, run_request, codebase) -> JobRun:
    """PrepareDataset as the state machine starts it: ContainerEntrypoint ["prepare"], the
    request's prepare.arguments as ContainerArguments, the run id in the environment."""
    root = codebase.parent
    out = harness.sagemaker_dir(root / "dataset")
    config = harness.sagemaker_dir(root / "config")
    (config / "resourceconfig.json").write_text(json.dumps(harness.processing_resource_config()))
    job = harness.Job(
        image=train_image,
        entrypoint="prepare",
        args=list(run_request["prepare"]["arguments"]),
        mounts={
            "/opt/ml/processing/input/code": codebase,
            "/opt/ml/processing/output/dataset": out,
            "/opt/ml/config": config,
        },
        read_only={"/opt/ml/processing/input/code", "/opt/ml/config"},
        env={"CODETUNE_RUN_ID": run_request["runId"]},
    )
    return timed(job, 600, {"dataset": out}, root / "prepare.log")


@pytest.fixture(scope="session")
def dataset(prepare_run) -> Path:
    """The prepared dataset as the next jobs' S3 prefix holds it (the prepare job's output)."""
    if prepare_run.result.returncode != 0:
        pytest.fail(f"the prepare job failed, so this job has no dataset:\n{prepare_run.tail()}")
    return prepare_run.dirs["dataset"]


def training_job(
    image: str, run_request: dict, dataset: Path, root: Path
) -> tuple[harness.Job, dict[str, Path]]:
    """TrainAdapter as the state machine creates it (createTrainingJob): ``docker run IMAGE
    train``, hyperparameters.json = the request's ``training.hyperparameters`` (SageMaker
    writes the HyperParameters map as JSON), the ``train`` and ``validation`` channels both
    the dataset prefix (each a copy, as SageMaker downloads them), resourceconfig.json and
    inputdataconfig.json as SageMaker writes them, and SageMaker's root-owned 0755
    directories for the model, the output (failure file) and the checkpoints."""
    dirs = {
        name: harness.sagemaker_dir(root / name)
        for name in ("config", "train", "validation", "model", "output", "checkpoints")
    }
    hosts = [f"algo-{i + 1}" for i in range(run_request["training"]["instanceCount"])]
    (dirs["config"] / "hyperparameters.json").write_text(
        json.dumps(run_request["training"]["hyperparameters"])
    )
    (dirs["config"] / "resourceconfig.json").write_text(
        json.dumps(harness.training_resource_config(run_request["training"]["instanceType"], hosts))
    )
    (dirs["config"] / "inputdataconfig.json").write_text(
        json.dumps(
            {
                ch: {
                    "TrainingInputMode": "File",
                    "S3DistributionType": "FullyReplicated",
                    "RecordWrapperType": "None",
                }
                for ch in ("train", "validation")
            }
        )
    )
    for channel in ("train", "validation"):
        for f in dataset.iterdir():
            shutil.copy2(f, dirs[channel] / f.name)
    return harness.Job(
        image=image,
        args=["train"],
        mounts={
            "/opt/ml/input/config": dirs["config"],
            "/opt/ml/input/data/train": dirs["train"],
            "/opt/ml/input/data/validation": dirs["validation"],
            "/opt/ml/model": dirs["model"],
            "/opt/ml/output": dirs["output"],
            "/opt/ml/checkpoints": dirs["checkpoints"],
        },
        read_only={
            "/opt/ml/input/config",
            "/opt/ml/input/data/train",
            "/opt/ml/input/data/validation",
        },
        env={
            "CODETUNE_RUN_ID": run_request["runId"],
            "TRAINING_JOB_NAME": f"{run_request['jobs']['train']}-r0",
        },
    ), dirs


@pytest.fixture(scope="session")
def train_run(train_image, run_request, dataset, tmp_path_factory) -> JobRun:
    root = tmp_path_factory.mktemp("train")
    job, dirs = training_job(train_image, run_request, dataset, root)
    return timed(job, 1200, dirs, root / "train.log")


@pytest.fixture(scope="session")
def model_archive(train_run, tmp_path_factory) -> Path:
    """``model.tar.gz`` as SageMaker uploads /opt/ml/model after the job (ModelDataUrl)."""
    if train_run.result.returncode != 0:
        pytest.fail(f"the training job failed, so there is no adapter:\n{train_run.tail()}")
    return harness.model_archive(
        train_run.dirs["model"], tmp_path_factory.mktemp("s3") / "model.tar.gz"
    )
