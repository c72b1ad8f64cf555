"""Shared fixtures.

The embedded model is fetched once by `make setup` into $CODETUNE_HOME (the Makefile points
it at .cache/codetune in the repository); tests reuse that cache and never download.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CODETUNE_HOME", str(REPO / ".cache" / "codetune"))
os.environ.setdefault("MALLOC_ARENA_MAX", "2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The converted embedded checkpoint (fetched by `make setup`; fetched here if missing)."""
    from codetune.model import fetch_embedded

    return fetch_embedded()
