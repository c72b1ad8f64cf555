"""ValidateBatch's logic: a batch input -> the names and settings of its transform job, or
every violation at once (codetune.workflow.batch)."""

from __future__ import annotations

import pytest

from codetune.workflow.batch import resolve_batch_request
from codetune.workflow.errors import InvalidRunInput
from codetune.workflow.naming import SAGEMAKER_NAME

PACKAGE = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/codetune/3"
GOOD = {"modelPackageArn": PACKAGE, "input": "s3://art/batch/nightly/requests.jsonl"}


def resolve(doc, name="nightly-1", stage="dev"):
    return resolve_batch_request(
        doc, execution_name=name, artifact_bucket="art", model_package_group="codetune", stage=stage
    )


def test_defaults_and_names():
    r = resolve(GOOD)
    assert r["jobName"] == "dev-nightly-1-batch" and r["modelName"] == "dev-nightly-1-bmodel"
    assert r["output"] == "s3://art/batch/nightly-1/output/"
    # no job adapter: the model's own default answers; the batch's instance type, not the
    # endpoint's the package names
    assert r["environment"] == {"CODETUNE_INSTANCE_TYPE": "ml.g5.xlarge"}
    assert (r["instanceType"], r["volumeKmsKey"], r["maxConcurrentTransforms"]) == (
        "ml.g5.xlarge",
        False,  # NVMe instance storage: SageMaker refuses a volume key
        0,
    )


def test_job_adapter_becomes_the_servers_default_model():
    r = resolve({**GOOD, "adapter": "my-run", "instanceType": "ml.m5.xlarge"})
    assert r["environment"] == {
        "CODETUNE_INSTANCE_TYPE": "ml.m5.xlarge",
        "CODETUNE_DEFAULT_MODEL": "my-run",
    }
    assert r["volumeKmsKey"] is True


def test_longest_execution_name_still_gives_valid_sagemaker_names():
    # guards: 80-character execution names hash down; the attempt suffix still fits 63
    r = resolve(GOOD, name="n" * 36 + "-" + "x" * 43, stage="abcdefghij")
    for name in (r["jobName"] + "-r9", r["modelName"]):
        assert SAGEMAKER_NAME.match(name) and len(name) <= 63, name


def test_every_violation_is_reported_with_what_is_allowed():
    doc = {
        "modelPackageArn": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/other/1",
        "input": "s3://other-bucket/requests.jsonl",
        "adapter": "a/b",
        "instanceType": "g5.xlarge",
        "instanceCount": 0,
        "maxConcurrentTransforms": -1,
        "invocationTimeoutSeconds": 7200,
        "colour": "blue",
    }
    with pytest.raises(InvalidRunInput) as e:
        resolve(doc)
    paths = [p for p, _ in e.value.violations]
    assert paths == [
        "$.colour",
        "$.modelPackageArn",
        "$.input",
        "$.adapter",
        "$.instanceType",
        "$.instanceCount",
        "$.maxConcurrentTransforms",
        "$.invocationTimeoutSeconds",
    ]
    assert "s3://art/batch/" in dict(e.value.violations)["$.input"]


def test_input_under_an_output_prefix_is_refused():
    # guards: a batch must not read another batch's answers as requests by accident
    with pytest.raises(InvalidRunInput, match="output/"):
        resolve({**GOOD, "input": "s3://art/batch/nightly-0/output/requests.jsonl.out"})


def test_missing_required_fields():
    with pytest.raises(InvalidRunInput) as e:
        resolve({})
    assert [p for p, _ in e.value.violations] == ["$.modelPackageArn", "$.input"]
