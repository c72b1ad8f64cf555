"""SageMaker jobs as plain processes: the layout SageMaker gives a job's container, laid out
under a directory that stands for ``/opt/ml``, and the training image's entrypoint run on it.

The local runner (:mod:`codetune.local`) runs its jobs this way, and the tests run the AWS
path's jobs this way, so a job's inputs — ``hyperparameters.json``, the channels, the
Processing mounts, the arguments and the environment — are decoded by the entrypoints that
decode them in the image:

================================================  ================================================
SageMaker                                         here (``root`` stands for ``/opt/ml``)
================================================  ================================================
``HyperParameters`` (CreateTrainingJob)           ``root/input/config/hyperparameters.json``, as sent
``resourceconfig.json``                           one host, ``algo-1`` (this machine)
a channel (``InputDataConfig``, File mode)        ``root/input/data/<channel>`` -> its local directory
``CheckpointConfig`` (synced with its S3 prefix)  ``root/checkpoints`` -> the prefix's directory
``/opt/ml/model`` (becomes model.tar.gz)          ``root/model``, published by the caller
``/opt/ml/output/failure`` (``FailureReason``)    :attr:`JobResult.failure`
a Processing input / output                       ``root/processing/input/<name>`` -> its directory;
                                                  ``root/processing/output/<name>`` uploaded after
the job's ``Environment``                         over this process's environment, with
                                                  ``CODETUNE_SM_ROOT=root``
an argument naming ``/opt/ml/...``                the same path under ``root``
================================================  ================================================

The entrypoints are ``training_image/bin/{train,prepare,evaluate}`` run by this interpreter
(a test keeps the two in step).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.paths import ENV_SM_ROOT

CONTAINER_ROOT = "/opt/ml"
# training_image/bin/<name>, as this interpreter runs them
ENTRYPOINTS: dict[str, tuple[str, ...]] = {
    "train": ("-m", "codetune.train.sagemaker"),
    "prepare": ("-m", "codetune.cli", "prepare"),
    "evaluate": ("-m", "codetune.cli", "evaluate"),
}
HOST = "algo-1"  # SageMaker's name of a job's first host


@dataclass(frozen=True)
class JobResult:
    """A finished job: its exit status, its log and its failure reason."""

    returncode: int
    log: str  # stdout and stderr as they came: what CloudWatch gets (metrics are read from it)
    failure: str | None = None  # the training job's output/failure: SageMaker's FailureReason

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def cause(self, entrypoint: str) -> str:
        """Why the job failed, in a line: its failure reason's last line, else its last
        error line, else its exit status."""
        for text in (self.failure, self.log):
            lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
            if lines:
                return f"the {entrypoint} job exited with status {self.returncode}: {lines[-1]}"
        return f"the {entrypoint} job exited with status {self.returncode}"


@dataclass(frozen=True)
class ProcessingJob:
    """What a Processing job's container sees of its CreateProcessingJob input."""

    entrypoint: str  # ContainerEntrypoint: a key of ENTRYPOINTS
    arguments: tuple[str, ...] = ()  # ContainerArguments
    environment: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Path] = field(default_factory=dict)  # InputName -> its local directory
    outputs: Mapping[str, Path] = field(default_factory=dict)  # OutputName -> where it goes


def in_container(path: str, root: Path) -> str:
    """``path`` as the container at ``root`` sees it: ``/opt/ml/...`` under ``root``."""
    if path == CONTAINER_ROOT or path.startswith(CONTAINER_ROOT + "/"):
        return str(root) + path[len(CONTAINER_ROOT) :]
    return path


def environment(job_environment: Mapping[str, str] | None, root: Path) -> dict[str, str]:
    """A job's process environment: this process's (less SageMaker's ``SM_*`` variables,
    which would move the job's paths), the job's ``Environment``, and the layout's root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.update(job_environment or {})
    env[ENV_SM_ROOT] = str(root)
    return env


def command_line(entrypoint: str, arguments, job_environment: Mapping[str, str], root: Path) -> str:
    """The job as a shell line a person can rerun."""
    env = {**job_environment, ENV_SM_ROOT: str(root)}
    words = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    words += ["python", *ENTRYPOINTS[entrypoint], *map(shlex.quote, arguments)]
    return " ".join(words)


def _fresh(root: Path) -> None:
    """An empty ``root`` (a previous attempt's container is removed; links are not followed)."""
    if root.is_symlink() or root.is_file():
        root.unlink()
    elif root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def _mount(source: Path, target: Path, what: str) -> None:
    if not source.is_dir():
        raise CodetuneError(f"{what}: {source} is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve(), target_is_directory=True)


def _replace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing what is there (a directory swapped whole)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    if dst.exists() or dst.is_symlink():
        os.replace(dst, old)
    shutil.move(str(src), str(dst))
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists() or old.is_symlink():
        old.unlink()


def publish(src: Path, dst: Path) -> None:
    """Move the directory ``src`` (a job's ``model/``) to ``dst``, replacing it whole."""
    _replace(src, dst)


def upload(src: Path, dst: Path) -> None:
    """A Processing output's EndOfJob upload: every entry of ``src`` replaces the one of the
    same name under ``dst`` (as objects under an S3 prefix; other entries stay)."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        _replace(entry, dst / entry.name)


def run_entrypoint(entrypoint: str, arguments, env: Mapping[str, str]) -> tuple[int, str]:
    """Run an image entrypoint; its output passes through as it comes and is returned too."""
    cmd = [sys.executable, *ENTRYPOINTS[entrypoint], *arguments]
    lines: list[str] = []
    lock = threading.Lock()
    with subprocess.Popen(
        cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:

        def pump(stream, sink):
            for line in stream:
                sink.write(line)
                sink.flush()
                with lock:
                    lines.append(line)

        readers = [
            threading.Thread(target=pump, args=(proc.stdout, sys.stdout), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, sys.stderr), daemon=True),
        ]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
    return proc.returncode, "".join(lines)


# --------------------------------------------------------------------------- training jobs


def training_layout(
    job: Mapping, root: Path, local_dir: Callable[[str], Path], hyperparameters=None
) -> None:
    """Lay out ``root`` as SageMaker lays out ``/opt/ml`` for the CreateTrainingJob input
    ``job`` (or a tuning trial of it: ``hyperparameters``, the trial's). ``local_dir`` maps a
    channel's or the checkpoints' S3 URI to the local directory holding that prefix."""
    _fresh(root)
    config = root / "input" / "config"
    config.mkdir(parents=True)
    hp = job.get("HyperParameters", {}) if hyperparameters is None else hyperparameters
    (config / "hyperparameters.json").write_text(json.dumps(hp))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": HOST, "hosts": [HOST]}))
    for ch in job.get("InputDataConfig", []):
        uri = ch["DataSource"]["S3DataSource"]["S3Uri"]
        name = ch["ChannelName"]
        _mount(local_dir(uri), root / "input" / "data" / name, f"channel {name} ({uri})")
    (root / "model").mkdir()
    (root / "output" / "data").mkdir(parents=True)
    checkpoints = job.get("CheckpointConfig")
    local_path = Path(
        in_container((checkpoints or {}).get("LocalPath", "/opt/ml/checkpoints"), root)
    )
    if checkpoints:
        synced = local_dir(checkpoints["S3Uri"])
        synced.mkdir(parents=True, exist_ok=True)
        _mount(synced, local_path, "checkpoints")
    else:
        local_path.mkdir(parents=True)


def run_training_job(
    job: Mapping, root: Path, local_dir: Callable[[str], Path], hyperparameters=None
) -> JobResult:
    """The training image's ``train`` on ``job`` laid out under ``root`` (see
    :func:`training_layout`), with the job's ``Environment``; the adapter is in
    ``root/model`` when it succeeds."""
    training_layout(job, root, local_dir, hyperparameters)
    code, log = run_entrypoint("train", (), environment(job.get("Environment"), root))
    failure = root / "output" / "failure"
    return JobResult(code, log, failure.read_text() if failure.is_file() else None)


# --------------------------------------------------------------------------- processing jobs


def run_processing_job(
    job: ProcessingJob, root: Path, *, host: str = HOST, hosts: tuple[str, ...] = (HOST,)
) -> JobResult:
    """``job``'s entrypoint with its inputs mounted under ``root/processing/input``, its
    arguments and environment, as host ``host`` of ``hosts``; each output is uploaded to its
    directory when the job succeeds."""
    _fresh(root)
    for name, source in job.inputs.items():
        _mount(Path(source), root / "processing" / "input" / name, f"processing input {name}")
    for name in job.outputs:
        (root / "processing" / "output" / name).mkdir(parents=True)
    (root / "config").mkdir()
    (root / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": list(hosts)})
    )
    arguments = [in_container(a, root) for a in job.arguments]
    code, log = run_entrypoint(job.entrypoint, arguments, environment(job.environment, root))
    if code == 0:
        for name, dest in job.outputs.items():
            upload(root / "processing" / "output" / name, Path(dest))
    return JobResult(code, log)
