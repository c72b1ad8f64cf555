"""File-system roots: the codetune cache and SageMaker's container contract.

SageMaker mounts everything under ``/opt/ml``. Every root is configurable so the same
entrypoints run as plain processes under a temporary directory in tests and locally:

- ``CODETUNE_HOME``: embedded model cache and downloads. Unset, the location recorded in the
  running Python environment (``<venv>/codetune-home``, written by ``codetune model fetch
  --remember``, which ``make setup`` runs for the checkout's ``.cache/codetune``) applies, else
  ``$XDG_CACHE_HOME/codetune`` (``~/.cache/codetune``).
- ``CODETUNE_SM_ROOT`` (default ``/opt/ml``): the root of SageMaker's layout.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "CODETUNE_HOME"
ENV_SM_ROOT = "CODETUNE_SM_ROOT"
HOME_RECORD = "codetune-home"  # file in the environment's prefix (the venv) naming its cache


def home_record() -> Path:
    """The file in this Python environment (``sys.prefix``) that names its cache directory."""
    return Path(sys.prefix) / HOME_RECORD


def default_home() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/codetune`` or ``~/.cache/codetune``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "codetune"


def codetune_home_source() -> tuple[Path, str]:
    """The cache directory and what chose it: ``"CODETUNE_HOME"``, the environment's record
    (``"<venv>/codetune-home"``), or ``"default"``."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env), ENV_HOME
    try:
        recorded = home_record().read_text().strip()
    except OSError:
        recorded = ""
    if recorded:
        return Path(recorded), str(home_record())
    return default_home(), "default"


def codetune_home() -> Path:
    """The cache directory (see the module docstring for the order)."""
    return codetune_home_source()[0]


def remember_home(path: Path) -> Path:
    """Record ``path`` as this environment's cache (used whenever CODETUNE_HOME is unset).
    Returns the record file. Raises OSError when the environment is not writable."""
    from codetune.io import write_text_atomic

    record = home_record()
    write_text_atomic(record, f"{Path(path).resolve()}\n")
    return record


@dataclass(frozen=True)
class SageMakerPaths:
    """SageMaker's container file-system contract under a configurable root."""

    root: Path

    @classmethod
    def from_env(cls) -> SageMakerPaths:
        return cls(Path(os.environ.get(ENV_SM_ROOT, "/opt/ml")))

    # Training jobs
    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def resource_config(self) -> Path:
        return self.root / "input" / "config" / "resourceconfig.json"

    def channel(self, name: str) -> Path:
        """``/opt/ml/input/data/<name>`` (honours ``SM_CHANNEL_<NAME>`` as SageMaker sets it)."""
        env = os.environ.get(f"SM_CHANNEL_{name.upper()}")
        return Path(env) if env else self.root / "input" / "data" / name

    @property
    def model_dir(self) -> Path:
        env = os.environ.get("SM_MODEL_DIR")
        return Path(env) if env else self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output_data(self) -> Path:
        env = os.environ.get("SM_OUTPUT_DATA_DIR")
        return Path(env) if env else self.root / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"

    # Processing jobs
    def processing_input(self, name: str) -> Path:
        return self.root / "processing" / "input" / name

    def processing_output(self, name: str) -> Path:
        return self.root / "processing" / "output" / name

    @property
    def processing_resource_config(self) -> Path:
        return self.root / "config" / "resourceconfig.json"

    def processing_hosts(self) -> tuple[str, list[str]] | None:
        """``(current_host, hosts)`` of a Processing job (``None`` outside one)."""
        import json

        try:
            rc = json.loads(self.processing_resource_config.read_text())
            return str(rc["current_host"]), [str(h) for h in rc["hosts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
