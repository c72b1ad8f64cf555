"""The quality gate: table-driven decisions, defaults, bad thresholds, schema of the report."""

from __future__ import annotations

import json

import jsonschema
import pytest

from codetune.errors import CodetuneError
from codetune.evaluate.gate import DEFAULT_THRESHOLDS, decide


def report(he=(0.30, 0.30), bf=(0.10, 0.20), parses=0.95, suites=("humaneval", "bugfix")):
    s = {}
    if "humaneval" in suites:
        s["humaneval"] = {"n": 164, "base": {"pass@1": he[0]}, "candidate": {"pass@1": he[1]}}
    if "bugfix" in suites:
        s["bugfix"] = {
            "n": 100,
            "base": {"exact_fix": bf[0], "parses": 0.9},
            "candidate": {"exact_fix": bf[1], "parses": parses},
        }
    return {
        "schemaVersion": "1",
        "runId": "r",
        "baseModel": "b",
        "adapter": "a",
        "suites": s,
        "gate": {"passed": False, "reasons": []},
    }


# Each row guards one gate rule: (report, thresholds, expected passed, substring of a FAIL reason)
CASES = [
    ("clear win", report(), {}, True, None),
    ("tie on bugfix is not enough", report(bf=(0.2, 0.2)), {}, False, "gain"),
    ("gain exactly at threshold passes (float tolerance)", report(bf=(0.10, 0.12)), {}, True, None),
    ("forgetting beyond 5 points", report(he=(0.30, 0.24)), {}, False, "HumanEval pass@1 change"),
    ("small HumanEval noise allowed", report(he=(0.30, 0.27)), {}, True, None),
    ("candidate below exact-fix floor", report(bf=(0.0, 0.04)), {}, False, "floor 0.050"),
    ("answers stop parsing", report(parses=0.5), {}, False, "parse"),
    ("HumanEval floor", report(he=(0.06, 0.03)), {}, False, "floor 0.050"),
    # a base model that cannot do HumanEval: the floor is capped at its score, the adapter
    # is judged on the bugfix gain (the embedded demo model's case)
    ("weak base: floor capped at base", report(he=(0.0, 0.0)), {}, True, None),
    ("weak base: candidate below it", report(he=(0.02, 0.0)), {}, False, "floor 0.020"),
    (
        "override relaxes floors",
        report(he=(0.0, 0.0), bf=(0.0, 0.02)),
        {"min_humaneval_pass1": 0, "min_bugfix_exact_fix": 0},
        True,
        None,
    ),
    ("override tightens gain", report(bf=(0.1, 0.2)), {"min_bugfix_gain": 0.2}, False, "gain"),
    ("bugfix-only report skips HumanEval checks", report(suites=("bugfix",)), {}, True, None),
    (
        "humaneval-only report judged on HumanEval",
        report(he=(0.3, 0.1), suites=("humaneval",)),
        {},
        False,
        "regression",
    ),
]


@pytest.mark.parametrize(
    ("name", "rep", "thresholds", "passed", "why"), CASES, ids=[c[0] for c in CASES]
)
def test_gate_table(name, rep, thresholds, passed, why):
    d = decide(rep, thresholds)
    assert d.passed is passed, d.reasons
    fails = [r for r in d.reasons if r.startswith("FAIL")]
    assert bool(fails) is (not passed)
    if why:
        assert any(why in r for r in fails), d.reasons


def test_defaults_are_not_zero():
    # Guards the requirement: a zero threshold would ship "equal" adapters.
    assert DEFAULT_THRESHOLDS["min_bugfix_gain"] > 0
    assert all(v > 0 for v in DEFAULT_THRESHOLDS.values())


def test_skipped_suite_is_reported():
    d = decide(report(suites=("bugfix",)))
    assert any(r.startswith("SKIP HumanEval") for r in d.reasons)


def test_empty_report_fails():
    # Guards: no evidence means no shipping.
    assert decide({"suites": {}}).passed is False
    assert decide({}).passed is False


@pytest.mark.parametrize(
    "bad", [{"min_bugfix_gian": 0.1}, {"min_bugfix_gain": "0.1"}, {"min_bugfix_gain": True}]
)
def test_bad_thresholds_raise(bad):
    # Guards: a typo in a threshold name must not silently keep the default.
    with pytest.raises(CodetuneError):
        decide(report(), bad)


def test_report_missing_metric_raises():
    rep = report()
    del rep["suites"]["bugfix"]["candidate"]["exact_fix"]
    with pytest.raises(CodetuneError, match="exact_fix"):
        decide(rep)


def test_report_schema_accepts_example_and_rejects_wrong_shape(repo_root):
    # Guards the report contract: the fixture report validates, a misspelled metric does not.
    schema = json.loads((repo_root / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    rep = report()
    rep["gate"] = decide(rep).to_dict()
    jsonschema.validate(rep, schema)
    bad = report()
    bad["suites"]["bugfix"]["candidate"]["exactfix"] = 0.1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = report()
    bad["suites"]["humaneval"]["base"]["pass@1"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
