"""Fixtures for the workflow glue: a deterministic planner stand-in and a base input."""

from __future__ import annotations

import copy

import pytest

PLANNED = "ml.g5.2xlarge"


@pytest.fixture
def fake_planner(monkeypatch):
    """Replace the planner with a recorder: "auto" -> PLANNED; ml.p5.48xlarge is refused.

    The real planner has its own tests; these tests guard how validate_run_input calls it
    and reports its verdict.
    """
    from codetune.plan import PlanError

    calls = []

    def recommend(base_model, config_name, overrides):
        calls.append(("recommend", base_model, config_name, overrides))
        return PLANNED

    def check(instance_type, base_model, config_name, overrides):
        calls.append(("check", instance_type, base_model, config_name, overrides))
        if instance_type == "ml.g4dn.xlarge":
            raise PlanError("needs 21.3 GB per GPU but ml.g4dn.xlarge has 14.6 GB usable")

    monkeypatch.setattr("codetune.plan.recommend_instance", recommend)
    monkeypatch.setattr("codetune.plan.check_instance", check)
    return calls


BASE_INPUT = {
    "baseModel": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
    "data": {"codebase": "s3://artifacts-bkt/codebases/svc/"},
    "training": {"config": "cpu-smollm2"},
}


@pytest.fixture
def base_input():
    return copy.deepcopy(BASE_INPUT)
