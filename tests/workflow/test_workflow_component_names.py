"""Inference component names and the deployment rules ValidateRequest checks up front."""

from __future__ import annotations

import pytest
from awscheck import limits

from codetune.workflow import InvalidRunInput, validate_run_input
from codetune.workflow.naming import component_name, component_names


def _validate(base_input, **deployment):
    base_input["deployment"] = deployment
    return validate_run_input(
        base_input, execution_name="run-1", artifact_bucket="artifacts-bkt", stage="dev"
    )


def _valid_component(name: str) -> bool:
    return not limits.problems(
        "sagemaker", "DescribeInferenceComponent", {"InferenceComponentName": name}
    )


def test_valid_names_are_kept():
    # guards: a name that fits is the readable <endpoint>-<adapter>
    assert component_names("codetune-dev", "payments-v2") == (
        "codetune-dev-base",
        "codetune-dev-payments-v2",
    )


@pytest.mark.parametrize(
    "adapter",
    ["svc.v1", "svc_v1", "a" * 63, "x." + "y" * 60],
)
def test_invalid_or_long_names_become_valid_and_deterministic(adapter):
    # guards: dots/underscores (allowed in adapterName, not in component names) and lengths
    # past 63 give a name botocore's pattern and length accept, the same each time
    name = component_name("codetune-dev", adapter)
    assert _valid_component(name) and len(name) <= 63
    assert name == component_name("codetune-dev", adapter)
    assert name.startswith("codetune-dev-")


def test_adapters_sharing_a_slug_get_distinct_components():
    # guards: "svc.v1", "svc_v1" and "svc-v1" are three adapters, so three components
    names = {component_name("codetune-dev", a) for a in ("svc.v1", "svc_v1", "svc-v1")}
    assert len(names) == 3


def test_request_carries_the_component_names(base_input, fake_planner):
    # guards: ValidateRequest names the components (the deploy and smoke steps use them)
    dep = _validate(base_input, endpointName="codetune-dev", adapterName="svc_v1").deployment
    assert dep.mode == "components" and dep.base_component == "codetune-dev-base"
    assert dep.adapter_component == component_name("codetune-dev", "svc_v1")


def test_adapter_named_base_is_refused(base_input, fake_planner):
    # guards: "base" names the base model in the serving contract and <endpoint>-base is the
    # base component: an adapter of that name would collide with both
    with pytest.raises(InvalidRunInput, match=r"\$\.deployment\.adapterName.*reserved"):
        _validate(base_input, adapterName="base")


def test_long_endpoint_is_refused_with_components_only(base_input, fake_planner):
    # guards: with components the endpoint name leaves room for -<adapter> and a hash; the
    # single-model path keeps SageMaker's 63
    with pytest.raises(InvalidRunInput, match=r"\$\.deployment\.endpointName.*at most 53"):
        _validate(base_input, endpointName="e" * 60)
    assert _validate(base_input, endpointName="e" * 60, mode="single-model").deployment


def test_gpu_type_of_unknown_size_is_refused_with_components(base_input, fake_planner):
    # guards: the base component claims every GPU of the instance; an instance type whose GPU
    # count is unknown is refused before anything is trained
    with pytest.raises(InvalidRunInput, match=r"\$\.deployment\.instanceType.*single-model"):
        _validate(base_input, instanceType="ml.g7.xlarge")


def test_adapter_rank_above_the_base_components_is_refused(base_input, fake_planner):
    # guards: the base component starts with no adapter, so its LoRA slots are sized up front
    # (deploy.BASE_MAX_LORA_RANK); a larger adapter would fail registration after training
    base_input["training"]["overrides"] = {"lora.rank": 128}
    with pytest.raises(InvalidRunInput, match=r"lora\.rank.*up to rank 64"):
        _validate(base_input)
    base_input["training"]["overrides"] = {"lora.rank": 128}
    assert _validate(base_input, mode="single-model").deployment.mode == "single-model"
