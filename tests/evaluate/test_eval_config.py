"""EvalConfig: the evaluate job's one config, loaded by the command and by ValidateRequest."""

from __future__ import annotations

import json

import pytest

from codetune.cli import build_parser
from codetune.config import load_config
from codetune.errors import CodetuneError, ConfigError
from codetune.evaluate.cli import eval_config
from codetune.evaluate.config import GENERAL_FILES, EvalConfig, load_from_arguments, set_arguments


def _cli(*argv: str) -> EvalConfig:
    return eval_config(build_parser().parse_args(["evaluate", *argv]))


def test_per_suite_limits_resolve_for_every_suite():
    # guards: an object gives each suite its own cap (left out: all; general: its 32 files),
    # an integer caps the problem suites only, null leaves every suite whole
    per = load_config(EvalConfig, None, ['limit={"bugfix": 93, "general": 12}'])
    assert per.limits() == {"humaneval": None, "bugfix": 93, "custom": None, "general": 12}
    every = load_config(EvalConfig, None, ["limit=20"])
    assert every.limits() == {"humaneval": 20, "bugfix": 20, "custom": 20, "general": GENERAL_FILES}
    assert EvalConfig().limits()["bugfix"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("limit=0", "limit: 0 is below 1"),
        ('limit={"bugfx": 3}', "limit.bugfx: unknown suite"),
        ('limit={"bugfix": 0}', "limit.bugfix: expected an integer >= 1 or null"),
        ("limit=true", "config.limit: expected an integer"),
        ("suites=[mmlu]", "suites: unknown suite(s) ['mmlu']"),
        ("samples=3", "needs temperature > 0"),
        ("thresholds.max_p_value=0", "thresholds: threshold max_p_value must be in (0, 1]"),
        ("thresholds.min_gain=0.1", "unknown quality-gate threshold 'min_gain'"),
        ("quantization=8bit", "'8bit' is not one of 'none', '4bit'"),
        ("sandbox_require=gvisor", "sandbox_require: unknown sandbox layer(s) gvisor"),
        ("limt=3", "unknown key(s) limt"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(override, message):
    # guards: the loader refuses a bad value before anything loads, naming the key
    with pytest.raises(CodetuneError) as e:
        load_config(EvalConfig, None, [override])
    assert message in str(e.value)


def test_flags_are_shorthands_for_config_keys(tmp_path):
    # guards: the command's flags, a YAML file and --set all set the same EvalConfig, in the
    # order file < flags < --set
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("suites: [humaneval, bugfix]\nlimit: {general: 10}\nseed: 3\n")
    config = _cli("--config", str(cfg), "--limit", "5", "--bugfix-limit", "9", "--seed", "4",
                  "--threshold", "min_bugfix_gain=0.1", "--set", "seed=7")  # fmt: skip
    assert config.suites == ["humaneval", "bugfix"]
    assert config.limits() == {"humaneval": 5, "bugfix": 9, "custom": 5, "general": 10}
    assert config.seed == 7 and config.thresholds == {"min_bugfix_gain": 0.1}
    with pytest.raises(ConfigError, match="contradicts sandbox_require"):
        _cli("--allow-unsandboxed", "--sandbox-require", "seccomp")


def test_job_arguments_round_trip_to_the_same_config():
    # guards: the ContainerArguments ValidateRequest renders decode, through the job's
    # parser, to the config they were made from; no argument nears SageMaker's 256 characters
    overrides = {
        "suites": ["bugfix", "general"],
        "limit": {"bugfix": 93, "humaneval": None},
        "thresholds": {"max_p_value": 0.05, "min_bugfix_gain": 0.02},
        "compare_sft": False,
    }
    args = set_arguments(overrides)
    assert args[::2] == ["--set"] * (len(args) // 2) and max(map(len, args)) < 64
    whole = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    assert load_from_arguments(args) == load_config(EvalConfig, None, whole)
    assert _cli(*args) == load_from_arguments(args)


def test_shipped_config_loads_to_the_defaults(repo_root):
    # guards: training_image/evaluate.yaml documents every key and states the defaults (a key
    # renamed or a default changed in one place only fails here)
    import dataclasses

    from codetune.config import read_yaml

    path = repo_root / "training_image" / "evaluate.yaml"
    assert set(read_yaml(path)) == {f.name for f in dataclasses.fields(EvalConfig)}
    shipped = load_config(EvalConfig, path)
    assert shipped.limits() == EvalConfig().limits()
    assert dataclasses.replace(shipped, limit=None) == EvalConfig()


def test_demo_input_gives_the_gate_a_decidable_sample(repo_root):
    # guards: `make demo` can pass the gate at its defaults: the forgetting guard runs, the
    # bugfix sample holds the >= 5 improved problems a clean sign test needs with room to
    # spare (benchmarks/RESULTS.md: ~60-80 at the demo's rate), and any HumanEval sample is
    # big enough that a 0.00 -> 0.00 result (the embedded model) bounds the loss below the
    # margin, since a smaller one always fails the non-inferiority check
    from statistics import NormalDist

    from codetune.evaluate.gate import DEFAULT_THRESHOLDS, paired_diff_interval
    from codetune.workflow import validate_run_input

    doc = json.loads((repo_root / "examples" / "run-input.local.json").read_text())
    req = validate_run_input(doc, execution_name="demo", artifact_bucket="/tmp/demo-check")
    config = load_from_arguments(req.evaluation.arguments)
    assert config.thresholds == {}  # the demo decides at the gate's defaults
    assert {"bugfix", "general"} <= set(config.suites)
    assert (config.limits()["bugfix"] or 10**6) >= 60 and config.limits()["general"] >= 10
    if "humaneval" in config.suites:
        n = config.limits()["humaneval"] or 164
        z = NormalDist().inv_cdf(1 - DEFAULT_THRESHOLDS["max_p_value"])
        lo, _ = paired_diff_interval(0, 0, 0, n, z)
        assert -lo < DEFAULT_THRESHOLDS["max_humaneval_regression"], n
