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


def test_reserved_concurrency_is_off_by_default_and_settable_per_stage(context):
    # guards: no stage reserves Lambda concurrency unless it says so (new accounts' limit of
    # 10 leaves nothing to reserve); a stage may set a positive number
    assert all(load_stage(context, s).lambda_reserved_concurrency is None for s in ("dev", "prod"))
    context = json.loads(json.dumps(context))
    context["stages"]["prod"]["lambdaReservedConcurrency"] = 20
    assert load_stage(context, "prod").lambda_reserved_concurrency == 20
    context["stages"]["prod"]["lambdaReservedConcurrency"] = 0
    with pytest.raises(StageConfigError, match="lambdaReservedConcurrency must be >= 1 or null"):
        load_stage(context, "prod")


def test_endpoint_name_defaults_per_stage(context):
    # guards: a stage without endpointName gets codetune-<stage>, never another stage's
    context = json.loads(json.dumps(context))
    del context["stages"]["dev"]["endpointName"]
    assert load_stage(context, "dev").endpoint == "codetune-dev"


def test_state_machine_timeout_must_leave_time_to_train(context):
    # guards: the training task gets the execution's timeout less prepare/evaluation/glue
    context = json.loads(json.dumps(context))
    context["stages"]["dev"]["stateMachineTimeoutHours"] = 12
    with pytest.raises(StageConfigError, match="stateMachineTimeoutHours must be >= 20"):
        load_stage(context, "dev")
