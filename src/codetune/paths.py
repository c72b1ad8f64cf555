"""File-system roots: the codetune cache and SageMaker's container contract.

SageMaker mounts everything under ``/opt/ml``. Every root is configurable so the same
entrypoints run as plain processes under a temporary directory in tests and locally:

- ``CODETUNE_HOME`` (default ``~/.cache/codetune``): embedded model cache and downloads.
- ``CODETUNE_SM_ROOT`` (default ``/opt/ml``): the root of SageMaker's layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "CODETUNE_HOME"
ENV_SM_ROOT = "CODETUNE_SM_ROOT"


def codetune_home() -> Path:
    """The cache directory (``$CODETUNE_HOME`` or ``~/.cache/codetune``)."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".cache" / "codetune")


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
