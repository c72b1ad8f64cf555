"""Fixtures for the inference server tests (the random LoRA adapter lives in tests/conftest.py).

Each test module starts ONE real uvicorn server (loopback only) with the embedded model;
generation runs on one torch thread (much faster than two on a CPU shared with other jobs).
"""

from __future__ import annotations
