"""The training image's ``train`` command: SageMaker's training-job contract.

SageMaker runs ``train`` with no arguments. It reads, under ``$CODETUNE_SM_ROOT`` (``/opt/ml``):

- ``input/config/hyperparameters.json`` — ``codetune_config`` + ``codetune_overrides``
  (decoded by :func:`codetune.train.hyperparameters.from_hyperparameters`)
- ``input/data/train`` (+ ``validation``) — the prepare output; ``input/data/model`` —
  optional base weights (a directory with ``config.json``) that override ``base_model``
- writes the adapter to ``model/`` and checkpoints to ``checkpoints/`` (synced to S3)

With more than one process in total (``SM_HOSTS`` x ``SM_NUM_GPUS``) it re-launches itself
under torchrun, one process per GPU, node rank from ``SM_CURRENT_HOST``.
``CODETUNE_NPROC_PER_NODE`` overrides the per-node count (tests use 2 CPU processes).

Run it locally exactly as SageMaker does::

    CODETUNE_SM_ROOT=/tmp/sm python -m codetune.train.sagemaker
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback

from codetune.errors import CodetuneError
from codetune.paths import SageMakerPaths

log = logging.getLogger("codetune.train.sagemaker")
MASTER_PORT = "29517"


def launch_command(env: dict[str, str]) -> list[str] | None:
    """The torchrun command to re-launch under, or None for a single process.

    Raises CodetuneError when ``SM_CURRENT_HOST`` is not among ``SM_HOSTS``.
    """
    if "LOCAL_RANK" in env:  # already under torchrun
        return None
    hosts = json.loads(env.get("SM_HOSTS") or "[]") or ["localhost"]
    nproc = int(env.get("CODETUNE_NPROC_PER_NODE") or env.get("SM_NUM_GPUS") or 0) or 1
    if len(hosts) * nproc <= 1:
        return None
    current = env.get("SM_CURRENT_HOST", hosts[0])
    if current not in hosts:
        raise CodetuneError(f"SM_CURRENT_HOST={current!r} is not in SM_HOSTS={hosts}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={len(hosts)}",
        f"--nproc-per-node={nproc}",
        f"--node-rank={hosts.index(current)}",
        f"--master-addr={hosts[0] if len(hosts) > 1 else '127.0.0.1'}",
        f"--master-port={env.get('CODETUNE_MASTER_PORT', MASTER_PORT)}",
        "-m",
        "codetune.train.sagemaker",
    ]


def main() -> int:
    """Run one training job from the SageMaker layout; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    paths = SageMakerPaths.from_env()
    try:
        cmd = launch_command(dict(os.environ))
        if cmd is not None:
            log.info("launching %s", " ".join(cmd))
            os.execv(cmd[0], cmd)
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
    from codetune.train.hyperparameters import from_hyperparameters
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
    run_training(config, data, paths.model_dir, base_model=base, checkpoints_dir=paths.checkpoints)
    return 0


def _merge_channels(train_dir, validation_dir):
    """Separate train/validation channels -> one dataset dir (symlinks in a temp dir)."""
    import tempfile
    from pathlib import Path

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
