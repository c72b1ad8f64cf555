"""Stage configuration from cdk.json: read once, strictly (no synthesis needed)."""

from __future__ import annotations

import json

import pytest

from cdk.config import StageConfigError, load_stage


@pytest.fixture(scope="module")
def context(repo_root) -> dict:
    return json.loads((repo_root / "cdk.json").read_text())["context"]


def test_every_shipped_stage_loads(context):
    # guards: dev and prod in cdk.json are valid StageConfigs; prod keeps data on delete
    configs = {name: load_stage(context, name) for name in context["stages"]}
    assert set(configs) == {"dev", "prod"}
    assert configs["prod"].retain_data and not configs["dev"].retain_data


def test_unknown_stage_names_the_known_ones(context):
    # guards: `-c stage=typo` fails with the list of stages
    with pytest.raises(StageConfigError, match=r"unknown stage 'qa'.*\['dev', 'prod'\]"):
        load_stage(context, "qa")


def test_unknown_key_fails(context):
    # guards: a misspelled setting is an error, not silently ignored
    context = json.loads(json.dumps(context))
    context["stages"]["dev"]["logRetentionDayz"] = 7
    with pytest.raises(StageConfigError, match="unknown key 'logRetentionDayz'"):
        load_stage(context, "dev")


def test_wrong_type_fails(context):
    # guards: types are checked (a string where days are expected)
    context = json.loads(json.dumps(context))
    context["stages"]["dev"]["checkpointExpiryDays"] = "7"
    with pytest.raises(StageConfigError, match="checkpointExpiryDays"):
        load_stage(context, "dev")


def test_vpc_needs_subnets_and_security_groups(context):
    # guards: half a VPC configuration is rejected before synthesis
    context = json.loads(json.dumps(context))
    context["stages"]["dev"]["vpcSubnetIds"] = ["subnet-1"]
    with pytest.raises(StageConfigError, match="vpcSecurityGroupIds"):
        load_stage(context, "dev")
