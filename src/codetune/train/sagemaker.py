"""The training image's ``train`` command: SageMaker's training-job contract.

SageMaker runs ``train`` with no arguments. It reads, under ``$CODETUNE_SM_ROOT`` (``/opt/ml``):

- ``input/config/hyperparameters.json`` — ``codetune_config`` + ``codetune_overrides``, and
  for a tuning trial its tuned keys (decoded by
  :func:`codetune.train.hyperparameters.from_hyperparameters`)
- ``input/data/train`` (+ ``validation``) — the prepare output; ``input/data/model`` —
  optional base weights (a directory with ``config.json``) that override ``base_model``
- writes the adapter to ``model/`` and checkpoints to ``checkpoints/`` (synced to S3; a tuning
  trial to ``checkpoints/trial-<hash of its hyperparameters>/``)

How many processes: ``input/config/resourceconfig.json`` (which SageMaker writes into every
training container: ``current_host``, ``hosts``, ``network_interface_name``) times the GPUs
``torch.cuda.device_count()`` sees (at least one process per host). One in total trains in this
process; more re-exec this same entrypoint under torchrun: ``nnodes`` = number of hosts,
``node_rank`` = index of ``current_host`` in the sorted hosts, master = the first of them,
port ``CODETUNE_MASTER_PORT`` (default 29517). No resourceconfig.json (a local run) = one host.
(``SM_HOSTS``/``SM_NUM_GPUS`` come from sagemaker-training-toolkit, which the image lacks.)

Run it locally exactly as SageMaker does::

    CODETUNE_SM_ROOT=/tmp/sm python -m codetune.train.sagemaker
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.paths import SageMakerPaths

log = logging.getLogger("codetune.train.sagemaker")
MASTER_PORT = "29517"


@dataclass(frozen=True)
class Cluster:
    """The hosts of a training job, from its ``resourceconfig.json``."""

    current_host: str
    hosts: tuple[str, ...]  # sorted: every host derives the same ranks and master
    network_interface: str | None = None


RESOURCECONFIG_SHAPE = (
    '{"current_host": "algo-1", "hosts": ["algo-1", "algo-2"], "network_interface_name": "eth0"}'
)


def read_cluster(path: Path) -> Cluster | None:
    """The job's hosts from ``resourceconfig.json``; None when the file does not exist.

    Raises CodetuneError naming the file and the problem when it is malformed.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None

    def bad(problem: str) -> CodetuneError:
        return CodetuneError(f"{path}: {problem}; SageMaker writes it as {RESOURCECONFIG_SHAPE}")

    try:
        rc = json.loads(text)
    except ValueError as e:
        raise bad(f"not valid JSON ({e})") from e
    if not isinstance(rc, dict):
        raise bad(f"must be a JSON object, got {type(rc).__name__}")
    current, hosts, nic = rc.get("current_host"), rc.get("hosts"), rc.get("network_interface_name")
    if not isinstance(current, str) or not current:
        raise bad(f"current_host must be a host name, got {current!r}")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise bad(f"hosts must be a non-empty list of host names, got {hosts!r}")
    twice = sorted({h for h in hosts if hosts.count(h) > 1})
    if twice:
        raise bad(f"hosts lists {', '.join(twice)} twice")
    if current not in hosts:
        raise bad(f"current_host {current!r} is not in hosts {hosts}")
    if nic is not None and (not isinstance(nic, str) or not nic):
        raise bad(f"network_interface_name must be an interface name, got {nic!r}")
    return Cluster(current, tuple(sorted(hosts)), nic)


@dataclass(frozen=True)
class Launch:
    """The torchrun re-launch: its argv and the environment it runs with."""

    argv: list[str]
    env: dict[str, str]


def launch_plan(cluster: Cluster | None, gpus: int, env: Mapping[str, str]) -> Launch | None:
    """The torchrun re-launch for ``cluster`` with ``gpus`` per host, or None to train here.

    One process per GPU and at least one per host; None when that makes one process in all,
    or when this process was itself started by torchrun (``LOCAL_RANK`` set).
    """
    if "LOCAL_RANK" in env:
        return None
    cluster = cluster or Cluster("localhost", ("localhost",))
    nproc = max(gpus, 1)
    nnodes = len(cluster.hosts)
    if nnodes * nproc <= 1:
        return None
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}",
        f"--node-rank={cluster.hosts.index(cluster.current_host)}",
        f"--master-addr={cluster.hosts[0] if nnodes > 1 else '127.0.0.1'}",
        f"--master-port={env.get('CODETUNE_MASTER_PORT') or MASTER_PORT}",
        "-m",
        "codetune.train.sagemaker",
    ]
    full = dict(env)
    if nnodes > 1 and cluster.network_interface:
        # Without these NCCL and gloo pick an interface themselves, not always the one
        # SageMaker connects the hosts through.
        full.setdefault("NCCL_SOCKET_IFNAME", cluster.network_interface)
        full.setdefault("GLOO_SOCKET_IFNAME", cluster.network_interface)
    return Launch(argv, full)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def main() -> int:
    """Run one training job from the SageMaker layout; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    paths = SageMakerPaths.from_env()
    try:
        launch = launch_plan(read_cluster(paths.resource_config), _gpu_count(), os.environ)
        if launch is not None:
            log.info("launching %s", " ".join(launch.argv))
            os.execve(launch.argv[0], launch.argv, launch.env)
        return _train(paths)
    except CodetuneError as e:
        _fail(paths, str(e))
        print(f"train: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception:
        _fail(paths, traceback.format_exc())
        raise


def _train(paths: SageMakerPaths) -> int:
    from codetune.train.config import load_train_config
    from codetune.train.hyperparameters import from_hyperparameters, is_tuning_trial
    from codetune.train.runner import run_training

    hp = {}
    if paths.hyperparameters.is_file():
        try:
            hp = json.loads(paths.hyperparameters.read_text())
        except ValueError as e:
            raise CodetuneError(f"{paths.hyperparameters}: not valid JSON ({e})") from e
    name, overrides = from_hyperparameters(hp)
    config = load_train_config(name, overrides)
    data = paths.channel("train")
    validation = paths.channel("validation")
    if validation.is_dir() and not (data / "validation.jsonl").exists():
        data = _merge_channels(data, validation)
    model_channel = paths.channel("model")
    base = str(model_channel) if (model_channel / "config.json").is_file() else None
    checkpoints = paths.checkpoints
    if is_tuning_trial(hp):
        checkpoints = checkpoints / trial_checkpoint_dir(hp)
    run_training(config, data, paths.model_dir, base_model=base, checkpoints_dir=checkpoints)
    return 0


def trial_checkpoint_dir(hp: dict) -> str:
    """The checkpoint subdirectory of one tuning trial, named by its hyperparameters.

    Every trial of a tuning job gets the same CheckpointConfig, so they share one S3 prefix
    (synced into /opt/ml/checkpoints): without a directory of its own, a trial would resume
    from another trial's newest checkpoint (another rank, another learning rate). A restarted
    spot trial has the same hyperparameters, so it finds its own checkpoints again.
    """
    import hashlib

    digest = hashlib.sha256(json.dumps(hp, sort_keys=True).encode()).hexdigest()[:12]
    return f"trial-{digest}"


def _merge_channels(train_dir, validation_dir):
    """Separate train/validation channels -> one dataset dir (symlinks in a temp dir)."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="ct-data-"))
    for src in (train_dir, validation_dir):
        for f in Path(src).glob("*.jsonl"):
            if not (tmp / f.name).exists():
                (tmp / f.name).symlink_to(f.resolve())
    return tmp


def _fail(paths: SageMakerPaths, message: str) -> None:
    """SageMaker shows the failure file's text as the job's FailureReason."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    try:
        paths.failure_file.parent.mkdir(parents=True, exist_ok=True)
        paths.failure_file.write_text(message[-1000:])
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
