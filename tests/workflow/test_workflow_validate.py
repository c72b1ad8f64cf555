"""validate_run_input: defaults, names, planner use, and one precise message per violation."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from codetune.errors import CodetuneError
from codetune.workflow import InvalidRunInput, RunRequest, validate_run_input
from codetune.workflow.events import validate_against
from codetune.workflow.schemas import RUN_INPUT, RUN_REQUEST, load_schema
from codetune.workflow.validate import fill_defaults

PLANNED = "ml.g5.2xlarge"  # what the fake_planner fixture (conftest) recommends

BUCKET = "artifacts-bkt"


def _validate(doc, **kw):
    kw.setdefault("execution_name", "nightly-2026-11-22")
    kw.setdefault("artifact_bucket", BUCKET)
    return validate_run_input(doc, **kw)


def test_schemas_are_valid_draft_2020_12():
    # guards: both contracts are well-formed JSON Schema documents
    for name in (RUN_INPUT, RUN_REQUEST):
        Draft202012Validator.check_schema(load_schema(name))


def test_every_optional_field_has_a_default():
    # guards: "defaults spelled out" — no optional run-input field without a schema default
    def walk(schema, path):
        required = set(schema.get("required", []))
        for key, sub in schema.get("properties", {}).items():
            if key not in required and path != "$.data":  # data: exactly one of two, no default
                assert "default" in sub, f"{path}.{key} has no default"
            if "properties" in sub:
                walk(sub, f"{path}.{key}")

    walk(load_schema(RUN_INPUT), "$")


def test_minimal_input_resolves_with_defaults(fake_planner, base_input):
    # guards: defaults filled, "auto" resolved by the planner, output follows run-request schema
    req = _validate(base_input)
    doc = req.to_dict()
    validate_against(RUN_REQUEST, doc, "request")
    assert req.training.instance_type == PLANNED and req.training.instance_type_source == "auto"
    assert req.evaluation.instance_type == PLANNED  # evaluation "auto" follows training
    assert req.evaluation.suites == ["humaneval", "bugfix", "general"]
    assert req.deployment.endpoint_name == "codetune"
    assert req.deployment.adapter_name == req.run_id
    assert req.paths.run_prefix == f"s3://{BUCKET}/runs/{req.run_id}/"
    assert req.paths.model_data == f"{req.paths.output}{req.jobs.train}-r0/output/model.tar.gz"
    assert fake_planner == [("recommend", base_input["baseModel"], "cpu-smollm2", {})]
    assert RunRequest.from_dict(json.loads(json.dumps(doc))) == req  # round-trips through JSON


def test_hyperparameters_use_the_shared_encoding(fake_planner, base_input):
    # guards: the training job's hyperparameters are to_hyperparameters(config, overrides + rl)
    from codetune.train.hyperparameters import to_hyperparameters

    base_input["training"]["overrides"] = {"lora.rank": 32}
    base_input["training"]["rl"] = {"enabled": True, "steps": 5}
    req = _validate(base_input)
    assert req.training.hyperparameters == to_hyperparameters(
        "cpu-smollm2",
        {
            "lora.rank": 32,
            "rl.enabled": True,
            "rl.steps": 5,
            "base_model": base_input["baseModel"],
        },
    )
    assert fake_planner[0][3] == {"lora.rank": 32, "rl.enabled": True, "rl.steps": 5}


def test_compare_sft_reaches_the_request(fake_planner, base_input):
    # guards: evaluation.compareSft with the GRPO stage on is carried into the
    # resolved request (what the local runner / evaluate job read); off by default, and a
    # request written before the field existed still reads back as off
    assert _validate(copy.deepcopy(base_input)).evaluation.compare_sft is False
    base_input["training"]["rl"] = {"enabled": True}
    base_input["evaluation"] = {"compareSft": True}
    req = _validate(base_input)
    doc = req.to_dict()
    validate_against(RUN_REQUEST, doc, "request")
    assert req.evaluation.compare_sft is True and doc["evaluation"]["compareSft"] is True
    del doc["evaluation"]["compareSft"]
    assert RunRequest.from_dict(doc).evaluation.compare_sft is False


def test_hugging_face_base_model_reaches_the_trainer(fake_planner, base_input):
    # guards: a baseModel other than the config's base_model is what the training job trains:
    # the state machine sends only the hyperparameters (the model channel is for S3 weights)
    from codetune.train.config import load_train_config
    from codetune.train.hyperparameters import from_hyperparameters

    base_input["baseModel"] = "Qwen/Qwen2.5-Coder-0.5B-Instruct"  # cpu-smollm2 says embedded
    req = _validate(base_input)
    config_name, sets = from_hyperparameters(req.training.hyperparameters)
    assert load_train_config(config_name, sets).base_model == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert req.training.overrides == {}  # the user's own overrides stay as given

    # S3 weights go through the model channel; no base_model override then
    base_input["baseModel"] = f"s3://{BUCKET}/base-models/qwen/"
    base_input["training"]["instanceType"] = "ml.g5.xlarge"
    hp = _validate(base_input).training.hyperparameters
    assert "base_model" not in json.loads(hp["codetune_overrides"])


def test_override_contradicting_base_model_is_refused(fake_planner, base_input):
    # guards: two different models named in one input is an error, not a silent choice
    base_input["training"]["overrides"] = {"base_model": "bigcode/starcoder2-3b"}
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input)
    assert e.value.violations[0][0] == "$.training.overrides.base_model"
    assert "contradicts baseModel" in e.value.violations[0][1]


def test_explicit_instance_type_is_checked_by_the_planner(fake_planner, base_input):
    # guards: an explicit type is kept when the planner accepts it, refused with its numbers otherwise
    base_input["training"]["instanceType"] = "ml.g5.12xlarge"
    assert _validate(base_input).training.instance_type == "ml.g5.12xlarge"
    base_input["training"]["instanceType"] = "ml.g4dn.xlarge"
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input)
    assert e.value.violations == [
        (
            "$.training.instanceType",
            "the planner refuses it: needs 21.3 GB per GPU but ml.g4dn.xlarge has 14.6 GB usable",
        )
    ]


def test_spot_gets_a_max_wait(fake_planner, base_input):
    # guards: SageMaker requires MaxWait >= MaxRuntime with spot; default is twice the runtime
    base_input["training"].update(spot=True, maxRuntimeSeconds=3600)
    assert _validate(base_input).training.max_wait_seconds == 7200
    base_input["training"]["spot"] = False
    assert _validate(base_input).training.max_wait_seconds is None


def test_prepared_dataset_skips_prepare(fake_planner, base_input):
    # guards: a dataset input is used as the dataset path and preparation is skipped
    base_input["data"] = {"dataset": f"s3://{BUCKET}/datasets/svc"}
    req = _validate(base_input)
    assert req.data.skip_prepare and req.paths.dataset == f"s3://{BUCKET}/datasets/svc/"


def test_names_are_deterministic_and_valid(fake_planner, base_input):
    # guards: same execution name -> same names (retries reuse them); all SageMaker-valid
    long_name = "Nightly run: team/payments #42 — 2026-11-22T03:00:00Z retry".ljust(80, "x")
    a = _validate(copy.deepcopy(base_input), execution_name=long_name, stage="prod")
    b = _validate(copy.deepcopy(base_input), execution_name=long_name, stage="prod")
    assert a.to_dict() == b.to_dict()
    for name in vars(a.jobs).values():
        assert len(name) <= 63 and name.startswith("prod-")
    other = _validate(copy.deepcopy(base_input), execution_name=long_name[:-1] + "y", stage="prod")
    assert other.run_id != a.run_id  # names differing only past the slug still differ


def test_local_run_allows_local_references(fake_planner, base_input):
    # guards: local runs accept stdlib:, paths and file:// and produce file:// paths
    base_input["data"] = {"codebase": "stdlib:json,collections"}
    base_input["baseModel"] = "embedded"
    req = _validate(base_input, artifact_bucket="/tmp/ct-out")
    assert req.local and req.paths.run_prefix.startswith("file:///tmp/ct-out/runs/")


def test_examples_are_valid(fake_planner, repo_root):
    # guards: every shipped example input is accepted (local ones in a local run)
    files = sorted((repo_root / "examples").glob("run-input*.json"))
    assert len(files) >= 2
    for f in files:
        bucket = "/tmp/ct-out" if ".local." in f.name else "codetune-inputs-123456789012"
        req = _validate(json.loads(f.read_text()), artifact_bucket=bucket)
        validate_against(RUN_REQUEST, req.to_dict(), "request")


def _real_planner_problem() -> str | None:
    try:
        from codetune.plan import recommend_instance

        recommend_instance("embedded", "cpu-smollm2", {})
    except Exception as e:  # noqa: BLE001 - any failure means the real planner cannot run here
        return f"{type(e).__name__}: {e}"
    return None


@pytest.mark.skipif(
    _real_planner_problem() is not None,
    reason=f"real planner cannot plan the shipped cpu-smollm2 config yet ({_real_planner_problem()})",
)
def test_examples_with_the_real_planner(repo_root):
    # guards: the examples resolve "auto" through the real codetune.plan, not a stand-in
    for f in sorted((repo_root / "examples").glob("run-input*.json")):
        bucket = "/tmp/ct-out" if ".local." in f.name else "codetune-inputs-123456789012"
        req = _validate(json.loads(f.read_text()), artifact_bucket=bucket)
        assert req.training.instance_type.startswith("ml.")


# Each row: a mutation of the minimal input, the JSON path reported, words the message must hold.
def _set(path, value):
    def mutate(doc):
        node = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return mutate


def _del(path):
    def mutate(doc):
        node = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


MALFORMED = [
    ("missing baseModel", _del("baseModel"), "$.baseModel", ["required field is missing"]),
    ("missing data", _del("data"), "$.data", ["required field is missing"]),
    ("missing training.config", _del("training.config"), "$.training.config", ["required"]),
    ("unknown top field", _set("trainng", {}), "$.trainng", ["unknown field", "'training'"]),
    ("unknown nested field", _set("training.epochs", 3), "$.training.epochs", ["unknown field"]),
    ("bad base model", _set("baseModel", "not a model"), "$.baseModel", ["Hugging Face id"]),
    ("http codebase", _set("data.codebase", "https://x/y"), "$.data.codebase", ["s3://"]),
    ("no data source", _set("data", {}), "$.data", ["data.codebase", "data.dataset"]),
    (
        "both data sources",
        _set("data.dataset", "s3://artifacts-bkt/ds/"),
        "$.data",
        ["not both"],
    ),
    (
        "foreign bucket",
        _set("data.codebase", "s3://someone-else/code/"),
        "$.data.codebase",
        ["someone-else", "allowed buckets: artifacts-bkt"],
    ),
    ("local path on AWS", _set("data.codebase", "/home/me/src"), "$.data.codebase", ["local"]),
    ("stdlib on AWS", _set("data.codebase", "stdlib:json"), "$.data.codebase", ["local"]),
    (
        "bad instance type",
        _set("training.instanceType", "g5.xlarge"),
        "$.training.instanceType",
        ['"auto"'],
    ),
    (
        "zero instances",
        _set("training.instanceCount", 0),
        "$.training.instanceCount",
        ["minimum 1"],
    ),
    (
        "string count",
        _set("training.instanceCount", "2"),
        "$.training.instanceCount",
        ["expected integer"],
    ),
    ("spot not bool", _set("training.spot", "yes"), "$.training.spot", ["expected boolean"]),
    (
        "runtime too short",
        _set("training.maxRuntimeSeconds", 10),
        "$.training.maxRuntimeSeconds",
        ["600"],
    ),
    (
        "maxWait without spot",
        _set("training.maxWaitSeconds", 7200),
        "$.training.maxWaitSeconds",
        ["spot"],
    ),
    (
        "bad override key",
        _set("training.overrides", {"Lora Rank": 1}),
        "$.training.overrides",
        ["Lora Rank", "dotted"],
    ),
    (
        "bad rl",
        _set("training.rl", {"generations": 1}),
        "$.training.rl",
        ["rl.generations", "2 and 64"],
    ),
    ("unknown rl key", _set("training.rl", {"gens": 4}), "$.training.rl", ["gens"]),
    ("unknown config", _set("training.config", "gpu-huge"), "$.training.config", ["cpu-smollm2"]),
    (
        "unknown suite",
        _set("evaluation.suites", ["mmlu"]),
        "$.evaluation.suites[0]",
        ['"humaneval"'],
    ),
    (
        "empty suites",
        _set("evaluation.suites", []),
        "$.evaluation.suites",
        ["non-empty", "humaneval"],
    ),
    (
        "repeated suite",
        _set("evaluation.suites", ["bugfix", "bugfix"]),
        "$.evaluation.suites",
        ["non-unique"],
    ),
    ("zero limit", _set("evaluation.limit", 0), "$.evaluation.limit", ["minimum 1"]),
    (
        "misspelt per-suite limit",
        _set("evaluation.limit", {"bugfx": 93}),
        "$.evaluation.limit.bugfx",
        ["did you mean 'bugfix'", "humaneval, bugfix, general"],
    ),
    (
        "zero per-suite limit",
        _set("evaluation.limit", {"bugfix": 0}),
        "$.evaluation.limit.bugfix",
        ["minimum 1", "stratified"],
    ),
    (
        # the schema allows any number; the evaluation job's loader (and the gate) refuse it
        "p-value threshold outside (0, 1]",
        _set("evaluation.thresholds", {"max_p_value": 0}),
        "$.evaluation",
        ["the evaluation job refuses it", "max_p_value must be in (0, 1]"],
    ),
    (
        "non-numeric threshold",
        _set("evaluation.thresholds", {"min_bugfix_gain": "high"}),
        "$.evaluation.thresholds.min_bugfix_gain",
        ["expected number", "gate"],
    ),
    (
        "unknown threshold",
        _set("evaluation.thresholds", {"min_gain": 0.1}),
        "$.evaluation.thresholds.min_gain",
        ["min_bugfix_gain"],
    ),
    (
        "autoApprove string",
        _set("registration.autoApprove", "true"),
        "$.registration.autoApprove",
        ["boolean"],
    ),
    (
        "bad endpoint name",
        _set("deployment.endpointName", "my_endpoint"),
        "$.deployment.endpointName",
        ["hyphens"],
    ),
    (
        "min above max",
        _set("deployment.minCapacity", 5),
        "$.deployment.minCapacity",
        ["maxCapacity 2"],
    ),
    (
        "count outside range",
        _set("deployment.instanceCount", 3),
        "$.deployment.instanceCount",
        ["1..2"],
    ),
    (
        "timeout too long",
        _set("deployment.startupHealthCheckTimeoutSeconds", 7200),
        "$.deployment.startupHealthCheckTimeoutSeconds",
        ["3600"],
    ),
    ("wrong version", _set("schemaVersion", "2"), "$.schemaVersion", ['"1"']),
    (
        # only a run with a GRPO stage keeps an SFT-only adapter to compare
        "compareSft without rl",
        _set("evaluation.compareSft", True),
        "$.evaluation.compareSft",
        ["training.rl.enabled"],
    ),
    (
        "compareSft with rl explicitly off",
        lambda d: (
            d["training"].update(rl={"enabled": False})
            or d.setdefault("evaluation", {}).update(compareSft=True)
        ),
        "$.evaluation.compareSft",
        ["training.rl.enabled"],
    ),
    (
        "compareSft not a boolean",
        _set("evaluation.compareSft", "yes"),
        "$.evaluation.compareSft",
        ["boolean"],
    ),
]


@pytest.mark.parametrize("name,mutate,path,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_rejected_precisely(fake_planner, base_input, name, mutate, path, words):
    # guards: each distinct mistake is reported at its JSON path with what is allowed
    mutate(base_input)
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input)
    messages = [m for p, m in e.value.violations if p == path]
    assert messages, f"no violation at {path}: {e.value.violations}"
    assert all(any(w in m for m in messages) for w in words), messages
    assert path in str(e.value)  # the error text a user sees names the path


def test_all_violations_reported_at_once(fake_planner, base_input):
    # guards: every violation in one error, not the first one only; planner not asked on bad input
    for _, mutate, _, _ in MALFORMED[3:8] + MALFORMED[12:16]:
        mutate(base_input)
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input)
    assert len({p for p, _ in e.value.violations}) >= 7
    assert fake_planner == []


def test_non_object_input_is_rejected():
    # guards: a JSON array/string as the whole input gets a clear message, not a crash
    with pytest.raises(InvalidRunInput, match=r"\$: expected a JSON object, got an array"):
        _validate([1, 2])


def test_fill_defaults_does_not_override_given_values():
    # guards: defaults only fill gaps
    doc = fill_defaults({"deployment": {"maxCapacity": 7}}, load_schema(RUN_INPUT))
    assert doc["deployment"]["maxCapacity"] == 7 and doc["deployment"]["minCapacity"] == 1


def test_datasets_and_checkpoints_live_where_the_lifecycle_rules_expire_them(
    fake_planner, base_input, repo_root, monkeypatch
):
    # guards: the stack's lifecycle rules match the top-level prefixes datasets/ and
    # checkpoints/ (cdk/config.py); under runs/<runId>/ nothing would ever expire
    import importlib.util

    spec = importlib.util.spec_from_file_location("cdk_stage", repo_root / "cdk" / "config.py")
    cdk_config = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "cdk_stage", cdk_config)
    spec.loader.exec_module(cdk_config)  # plain dataclasses: no aws_cdk import
    CHECKPOINTS_PREFIX, DATASETS_PREFIX = cdk_config.CHECKPOINTS_PREFIX, cdk_config.DATASETS_PREFIX

    req = _validate(base_input)
    root = f"s3://{BUCKET}/"
    assert req.paths.checkpoints == f"{root}{CHECKPOINTS_PREFIX}{req.run_id}/"
    assert req.paths.dataset == f"{root}{DATASETS_PREFIX}{req.data.prepare_cache_key}/"
    assert not req.data.skip_prepare


def test_prepare_cache_key_follows_codebase_contents_and_config(fake_planner, base_input):
    # guards: step caching reuses a dataset only for the same codebase contents + prepare
    # config; another run of the same input shares it, changed code or config does not
    listing = {"v": "etag-1"}
    fingerprint = lambda uri: f"{uri}:{listing['v']}"  # noqa: E731
    a = _validate(copy.deepcopy(base_input), codebase_fingerprint=fingerprint)
    b = _validate(
        copy.deepcopy(base_input), execution_name="other", codebase_fingerprint=fingerprint
    )
    assert a.run_id != b.run_id and a.paths.dataset == b.paths.dataset
    listing["v"] = "etag-2"  # the same prefix, re-uploaded code
    c = _validate(copy.deepcopy(base_input), codebase_fingerprint=fingerprint)
    assert c.paths.dataset != a.paths.dataset
    base_input["prepare"] = {"config": {"min_function_lines": 4}}
    d = _validate(base_input, codebase_fingerprint=fingerprint)
    assert d.data.prepare_cache_key not in (a.data.prepare_cache_key, c.data.prepare_cache_key)


def test_only_the_stacks_endpoint_name_is_allowed(fake_planner, base_input):
    # guards: the rollback alarms watch the stack's endpoint, so a run may not deploy under
    # another name (its alarms would watch the wrong endpoint); the message names the allowed one
    assert _validate(base_input, endpoint_name="codetune").deployment.endpoint_name == "codetune"
    base_input["deployment"] = {"endpointName": "my-endpoint"}
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input, endpoint_name="codetune")
    [(path, message)] = e.value.violations
    assert path == "$.deployment.endpointName"
    assert "'my-endpoint'" in message and "allowed: 'codetune'" in message
    assert _validate(base_input).deployment.endpoint_name == "my-endpoint"  # local: any


def test_attempt_names_fit_sagemaker(fake_planner, base_input):
    # guards: every retry of a job gets a distinct valid name of <= 63 characters, even for
    # the longest run id and stage
    from codetune.workflow import naming

    req = _validate(base_input, execution_name="x" * 80, stage="abcdefghij")
    for name in (req.jobs.prepare, req.jobs.train, req.jobs.evaluate):
        attempts = {naming.attempt_name(name, n) for n in range(naming.MAX_RETRIES + 1)}
        assert len(attempts) == naming.MAX_RETRIES + 1
        for a in attempts:
            assert naming.SAGEMAKER_NAME.match(a) and len(a) <= 63, a


@pytest.mark.parametrize(
    "training, evaluation, prepare, expected",
    [
        # the example's GPU: NVMe instance storage, SageMaker refuses VolumeKmsKeyId
        ("ml.g5.xlarge", "auto", "ml.m5.xlarge", (False, False, True)),
        ("ml.p4d.24xlarge", "ml.g6e.xlarge", "ml.m5d.xlarge", (False, False, False)),
        # EBS-only types: the stack's key encrypts the volume
        ("ml.p3.2xlarge", "ml.m5.xlarge", "ml.c5.xlarge", (True, True, True)),
        ("ml.p3.2xlarge", "auto", "ml.g4dn.xlarge", (True, True, False)),
    ],
)
def test_volume_kms_key_follows_each_jobs_instance_type(
    fake_planner, base_input, training, evaluation, prepare, expected
):
    # guards: each job says whether a volume KMS key applies to its own instance type (the
    # state machine sends VolumeKmsKeyId only then), decided by the one function the endpoint
    # config and train --remote use; evaluation "auto" follows the training instance
    from codetune.workflow.deploy import supports_kms_volume

    base_input["training"]["instanceType"] = training
    base_input["evaluation"] = {"instanceType": evaluation}
    base_input["prepare"] = {"instanceType": prepare}
    req = _validate(base_input)
    flags = (req.training.volume_kms_key, req.evaluation.volume_kms_key, req.prepare.volume_kms_key)
    assert flags == expected
    for spec in (req.training, req.evaluation, req.prepare):
        assert spec.volume_kms_key == supports_kms_volume(spec.instance_type)
    doc = req.to_dict()
    assert (doc["training"]["volumeKmsKey"], doc["evaluation"]["volumeKmsKey"]) == expected[:2]
    assert doc["prepare"]["volumeKmsKey"] is expected[2]
    assert RunRequest.from_dict(doc) == req  # the schema requires and accepts the flags


def test_s3_base_model_with_an_explicit_instance_type_validates(base_input):
    # guards: the real planner cannot size weights in S3 and refuses them; an explicit
    # instance type is then the user's choice and must be accepted (the S3-model states of
    # the state machine are otherwise unreachable). No planner stand-in here.
    base_input["baseModel"] = f"s3://{BUCKET}/base-models/qwen/"
    base_input["training"]["instanceType"] = "ml.g5.2xlarge"
    req = _validate(base_input)
    assert req.base_model.s3_uri == base_input["baseModel"]
    assert req.training.instance_type == "ml.g5.2xlarge"
    assert req.evaluation.instance_type == "ml.g5.2xlarge"


def test_s3_base_model_with_auto_names_the_fix(base_input):
    # guards: "auto" with weights in S3 is refused up front with what to give instead
    base_input["baseModel"] = f"s3://{BUCKET}/base-models/qwen/"
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input)
    assert e.value.violations[0][0] == "$.training.instanceType"
    assert "give training.instanceType explicitly" in e.value.violations[0][1]


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        # the endpoint role reads base-models/ of the artifact bucket only
        ("baseModel", "s3://codetune-inputs/models/qwen/", "also read by the endpoint"),
        ("baseModel", f"s3://{BUCKET}/models/qwen/", f"s3://{BUCKET}/base-models/"),
        # RegisterAdapter reads the dataset's manifest: artifact bucket, datasets/ or runs/
        ("data.dataset", "s3://codetune-inputs/ds/", "RegisterAdapter"),
        ("data.dataset", f"s3://{BUCKET}/elsewhere/ds/", f"s3://{BUCKET}/datasets/"),
        ("data.codebase", f"s3://{BUCKET}/src/", f"s3://{BUCKET}/codebases/"),
    ],
)
def test_inputs_the_roles_cannot_read_are_refused(fake_planner, base_input, path, value, words):
    # guards: what ValidateRequest accepts can be read by every role that reads it
    base_input["data"] = {}
    node = base_input
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    if path != "data.codebase":
        base_input["data"].setdefault("dataset", f"s3://{BUCKET}/datasets/ok/")
    if path == "baseModel":
        base_input["training"]["instanceType"] = "ml.g5.2xlarge"
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input, allowed_buckets=["codetune-inputs"])
    assert any(p == f"$.{path}" and words in m for p, m in e.value.violations), e.value


def test_codebase_in_the_input_bucket_is_accepted(fake_planner, base_input):
    # guards: the input bucket (read by the jobs) holds codebases anywhere
    base_input["data"] = {"codebase": "s3://codetune-inputs/anything/svc/"}
    req = _validate(base_input, allowed_buckets=["codetune-inputs"])
    assert req.data.codebase_s3_uri == "s3://codetune-inputs/anything/svc/"


def test_prepare_config_reaches_the_job_as_arguments(fake_planner, base_input, repo_root):
    # guards: the shipped prepare.yaml as overrides (621 characters as one JSON value, over
    # SageMaker's 256 per environment value) passes as --set arguments of <= 256 each
    from codetune.config import read_yaml

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    shipped = dict(flat(read_yaml(repo_root / "training_image" / "prepare.yaml")))
    shipped.pop("languages", None)
    assert len(json.dumps(shipped)) > 256
    base_input["prepare"] = {"config": shipped}
    req = _validate(base_input)
    args = req.prepare.arguments
    assert args[0] == "--no-progress" and args.count("--set") == len(shipped)
    assert max(len(a) for a in args) <= 256 and len(args) <= 256
    assert req.prepare.merge_arguments[:2] == ["--merge", "/opt/ml/processing/input/shards"]
    assert req.prepare.merge_arguments[2:] == args


def test_prepare_job_arguments_give_the_job_the_shipped_config(fake_planner, base_input, repo_root):
    # guards: what ValidateRequest renders as the job's ContainerArguments is what
    # `codetune prepare` (the image's prepare entrypoint) parses back into the same config
    # as the shipped prepare.yaml: the config is passed whole, not cut at a limit
    from codetune.cli import build_parser
    from codetune.config import load_config, read_yaml
    from codetune.data.config import PrepareConfig

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    shipped = repo_root / "training_image" / "prepare.yaml"
    base_input["prepare"] = {"config": dict(flat(read_yaml(shipped)))}
    req = _validate(base_input)
    for argv in (req.prepare.arguments, req.prepare.merge_arguments):
        args = build_parser().parse_args(["prepare", *argv])
        assert load_config(PrepareConfig, None, args.overrides) == load_config(
            PrepareConfig, shipped
        )
    assert args.merge == [Path("/opt/ml/processing/input/shards")]


def test_evaluation_job_arguments_give_the_job_the_input_settings(fake_planner, base_input):
    # guards: the run input's evaluation settings reach the evaluate job's config whole: what
    # ValidateRequest renders as its ContainerArguments is what `codetune evaluate` (the image's
    # evaluate entrypoint) parses into its EvalConfig, per-suite limits and thresholds included
    from codetune.cli import build_parser
    from codetune.evaluate.cli import eval_config

    base_input["evaluation"] = {
        "suites": ["bugfix", "general"],
        "limit": {"bugfix": 93, "general": 12},
        "thresholds": {"max_p_value": 0.01},
    }
    req = _validate(base_input)
    assert req.evaluation.limit == {"bugfix": 93, "general": 12, "humaneval": None}
    args = build_parser().parse_args(["evaluate", *req.evaluation.arguments])
    config = eval_config(args)
    assert config.suites == ["bugfix", "general"]
    assert config.limits()["bugfix"] == 93 and config.limits()["general"] == 12
    assert config.thresholds == {"max_p_value": 0.01} and config.compare_sft is False
    assert max(len(a) for a in req.evaluation.arguments) <= 256
    # an integer still caps every problem suite, and the default is every problem
    for limit, expected in ((20, 20), (None, None)):
        base_input["evaluation"] = {"limit": limit}
        argv = _validate(base_input).evaluation.arguments
        limits = eval_config(build_parser().parse_args(["evaluate", *argv])).limits()
        assert limits["humaneval"] == limits["bugfix"] == expected and limits["general"] == 32


def test_prepare_override_over_the_argument_limit_is_refused(fake_planner, base_input):
    # guards: one override longer than a container argument may be is refused naming the limit
    base_input["prepare"] = {"config": {"exclude": ["x" * 40] * 7}}
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input)
    ((path, msg),) = e.value.violations
    assert path == "$.prepare.config.exclude" and "at most 256 per container argument" in msg


@pytest.mark.parametrize(
    ("training", "path"),
    [
        ({"maxRuntimeSeconds": 200_000}, "$.training.maxRuntimeSeconds"),
        ({"spot": True, "maxRuntimeSeconds": 150_000}, "$.training.maxRuntimeSeconds"),
        (
            {"spot": True, "maxRuntimeSeconds": 3600, "maxWaitSeconds": 150_000},
            "$.training.maxWaitSeconds",
        ),
    ],
)
def test_training_longer_than_the_training_step_is_refused(
    fake_planner, base_input, training, path
):
    # guards: the state machine's training task would time out with the job still running
    # (maxRuntimeSeconds may be 28 days); refused up front, naming the stack's limit
    base_input["training"].update(training)
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input, max_training_seconds=100_000)
    ((where, msg),) = e.value.violations
    assert where == path and "<= 100000" in msg
    base_input["training"].update(maxRuntimeSeconds=3600, maxWaitSeconds=None)
    base_input["training"].pop("maxWaitSeconds")
    assert _validate(base_input, max_training_seconds=100_000).training.max_runtime_seconds == 3600


def test_spot_default_wait_stays_within_the_training_step(fake_planner, base_input):
    # guards: without maxWaitSeconds spot waits twice the runtime, but never past the
    # training task's timeout (the default example's 24 h runtime on a 48 h stage)
    base_input["training"].update(spot=True, maxRuntimeSeconds=86_400)
    req = _validate(base_input, max_training_seconds=100_800)
    assert req.training.max_wait_seconds == 100_800


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lora.rank": 0}, "lora.rank must be >= 1, got 0"),
        ({"lora.rnak": 8}, "unknown key(s) rnak; known keys: "),
        ({"learning_rate": 2.0}, "learning_rate must be in (0, 1), got 2.0"),
    ],
)
def test_training_overrides_are_refused_with_the_trainers_message(
    fake_planner, base_input, overrides, message
):
    # guards "validated once": ValidateRequest loads the job's config with the trainer's own
    # loader (codetune.train.config.load_train_config), so what the job would refuse at
    # start-up is refused before anything starts, with the trainer's words, and not planned
    from codetune.train.config import load_train_config

    doc = copy.deepcopy(base_input)
    doc["training"] = {"config": "cpu-smollm2", "overrides": overrides}
    with pytest.raises(InvalidRunInput) as e:
        _validate(doc)
    with pytest.raises(Exception) as trainer:
        load_train_config("cpu-smollm2", {**overrides, "base_model": doc["baseModel"]})
    assert message in str(trainer.value)
    assert f"$.training.overrides: the trainer refuses it: {trainer.value}" in str(e.value)
    assert fake_planner == []  # nothing planned for a config the trainer refuses


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tasks": ["bugfix", "rewrite"]}, "tasks: ['rewrite'] invalid"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"max_file": 10}, "unknown key(s) max_file"),
    ],
)
def test_prepare_config_is_refused_with_the_jobs_own_message(
    fake_planner, base_input, config, message
):
    # guards: the prepare config goes through the job's loader (PrepareConfig) in
    # ValidateRequest, so a value `codetune prepare` would refuse at start-up fails here
    # first, with the job's message, instead of in the Processing job
    from codetune.config import load_config
    from codetune.data.config import PrepareConfig

    sets = [f"{k}={json.dumps(v)}" for k, v in config.items()]
    with pytest.raises(CodetuneError) as job:
        load_config(PrepareConfig, None, sets)
    assert message in str(job.value)
    base_input["prepare"] = {"config": config}
    with pytest.raises(InvalidRunInput) as e:
        _validate(base_input)
    assert ("$.prepare.config", f"the prepare job refuses it: {job.value}") in e.value.violations
