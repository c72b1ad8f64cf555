"""Fixtures for the training tests (helpers live in train_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_fixtures import TINY, write_dataset


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
