"""The quality gate: paired significance, non-inferiority, floors, defaults, bad thresholds,
schema of the report."""

from __future__ import annotations

import json
import math
import random

import jsonschema
import pytest

from codetune.errors import CodetuneError
from codetune.evaluate.gate import (
    DEFAULT_THRESHOLDS,
    decide,
    min_problems,
    paired_diff_interval,
    sign_test_p,
)


def cells(improved=0, regressed=0, both=0, neither=0):
    return {"improved": improved, "regressed": regressed, "both": both, "neither": neither}


def side_rates(c):
    n = sum(c.values())
    return (c["both"] + c["regressed"]) / n, (c["both"] + c["improved"]) / n


def general(rel_change=0.0, n=32, spread=0.01, seed=0):
    """A general-code suite entry: n files whose candidate loss is base * (1 + change +- noise)."""
    rng = random.Random(seed)
    files = []
    for i in range(n):
        b = 1.0 + 0.5 * rng.random()
        c = b * (1 + rel_change + rng.uniform(-spread, spread))
        files.append({"path": f"f{i}.py", "tokens": 300, "base": b, "candidate": c})
    mean = lambda side: sum(f[side] for f in files) / n  # noqa: E731
    return {
        "n": n,
        "tokens": 300 * n,
        "base": {"loss": mean("base")},
        "candidate": {"loss": mean("candidate")},
        "files": files,
    }


def report(
    bf=cells(improved=20, regressed=2, both=8, neither=70),
    he=cells(improved=3, regressed=3, both=43, neither=115),
    parses=0.95,
    gen=None,
    suites=("humaneval", "bugfix", "general"),
):
    s = {}
    if "humaneval" in suites:
        b, c = side_rates(he)
        s["humaneval"] = {
            "n": sum(he.values()),
            "base": {"pass@1": b},
            "candidate": {"pass@1": c},
            "paired": he,
        }
    if "bugfix" in suites:
        b, c = side_rates(bf)
        s["bugfix"] = {
            "n": sum(bf.values()),
            "base": {"exact_fix": b, "parses": 0.9},
            "candidate": {"exact_fix": c, "parses": parses},
            "paired": bf,
        }
    if "general" in suites:
        s["general"] = gen or general()
    return {
        "schemaVersion": "1",
        "runId": "r",
        "baseModel": "b",
        "adapter": "a",
        "suites": s,
        "gate": {"passed": False, "reasons": []},
    }


def fails(d):
    return [r for r in d.reasons if r.startswith("FAIL")]


# ------------------------------------------------------------ the three cases


def test_two_lucky_flips_of_twenty_are_not_significant():
    # Guards the demo's old false pass: 0.10 -> 0.20 over 20 problems is 2 improved / 0
    # regressed, p = 0.25 under "no difference"; the gain margin alone passed it.
    d = decide(report(bf=cells(improved=2, both=2, neither=16), suites=("bugfix", "general")))
    assert d.passed is False, d.reasons
    (line,) = [r for r in fails(d) if "gain" in r]
    assert "not significant (p=0.25" in line
    assert "2 improved / 0 regressed / 18 unchanged of 20" in line
    assert "interval [" in line


def test_twelve_improved_one_regressed_of_sixty_passes():
    # Guards the positive case: a real effect on a modest sample ships.
    d = decide(report(bf=cells(improved=12, regressed=1, both=3, neither=44)))
    assert d.passed is True, d.reasons
    (line,) = [r for r in d.reasons if "gain" in r]
    assert line.startswith("PASS") and "significant (p=0.0017" in line
    assert "12 improved / 1 regressed / 47 unchanged of 60" in line and "interval [+0." in line


def test_five_problems_cannot_decide():
    # Guards: a suite too small to ever be significant (with one regression) fails, and says
    # how many problems it would need — even a clean sweep of 5 does not pass silently.
    d = decide(report(bf=cells(improved=5), suites=("bugfix", "general")))
    assert d.passed is False
    (line,) = [r for r in fails(d) if "gain" in r]
    assert "cannot decide: need >= 8 problems" in line and "5 improved" in line


# ------------------------------------------------------------ the statistics


@pytest.mark.parametrize(("b", "c"), [(0, 0), (2, 0), (12, 1), (7, 1), (30, 22), (3, 9)])
def test_sign_test_matches_scipy(b, c):
    # Guards the hand-written exact binomial (the Lambda has no scipy) against scipy's.
    scipy_stats = pytest.importorskip("scipy.stats")
    want = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, alternative="greater").pvalue
    assert math.isclose(sign_test_p(b, c), want, rel_tol=1e-12)


def test_min_problems_follows_the_level():
    # Guards the "cannot decide" rule: the least m with (m + 1) / 2**m <= p.
    assert min_problems(0.05) == 8 and (8 + 1) / 2**8 <= 0.05 < (7 + 1) / 2**7
    assert min_problems(0.01) == 11


def test_paired_interval_matches_newcombe_worked_example():
    # Guards the interval against Newcombe (1998) Table II, example (a): a=36 b=12 c=2 d=0
    # (here: both=36, improved=12, regressed=2, neither=0), 95%: [0.0569, 0.3404].
    lo, hi = paired_diff_interval(improved=12, regressed=2, both=36, neither=0, z=1.959964)
    assert round(lo, 4) == 0.0569 and round(hi, 4) == 0.3404


# ------------------------------------------------------------ the table of rules

# Each row guards one gate rule: (report, thresholds, expected passed, substring of a FAIL reason)
CASES = [
    ("clear win", report(), {}, True, None),
    ("tie on bugfix is not enough", report(bf=cells(10, 10, 10, 70)), {}, False, "gain"),
    (
        "significant but below the margin",
        report(bf=cells(improved=9, both=0, neither=991)),
        {"min_bugfix_gain": 0.02},
        False,
        "below the margin",
    ),
    (
        "HumanEval loss bounded below 5 points",
        report(he=cells(improved=0, regressed=1, both=49, neither=114)),
        {},
        True,
        None,
    ),
    (
        "HumanEval: 20 problems cannot show non-inferiority",
        report(he=cells(neither=20)),
        {"min_humaneval_pass1": 0},
        False,
        "non-inferiority not shown",
    ),
    (
        "forgetting beyond 5 points",
        report(he=cells(improved=0, regressed=12, both=40, neither=112)),
        {},
        False,
        "HumanEval pass@1 change",
    ),
    (
        "candidate below exact-fix floor",
        report(bf=cells(improved=4, neither=96)),
        {},
        False,
        "floor 0.050",
    ),
    ("answers stop parsing", report(parses=0.5), {}, False, "parse"),
    (
        "HumanEval floor",
        report(he=cells(improved=1, regressed=5, both=5, neither=153)),
        {},
        False,
        "floor 0.050",
    ),
    (
        "override relaxes floors",
        report(bf=cells(improved=10, neither=490)),
        {"min_bugfix_exact_fix": 0},
        True,
        None,
    ),
    ("override tightens gain", report(), {"min_bugfix_gain": 0.2}, False, "gain"),
    (
        "override tightens the level",
        report(bf=cells(8, 1, 0, 91)),
        {"max_p_value": 0.01},
        False,
        "not significant",
    ),
    ("bugfix-only report skips other checks", report(suites=("bugfix",)), {}, True, None),
    (
        "humaneval-only report judged on HumanEval",
        report(he=cells(regressed=30, both=20, neither=114), suites=("humaneval",)),
        {},
        False,
        "non-inferiority",
    ),
    ("general loss within margin", report(gen=general(0.01)), {}, True, None),
    ("general loss up 10%", report(gen=general(0.10)), {}, False, "general-code loss"),
    (
        "general loss: bound, not point estimate",
        report(gen=general(0.04, n=12, spread=0.2)),
        {},
        False,
        "damages general code",
    ),
    (
        "general loss: 5 files cannot decide",
        report(gen=general(0.0, n=5)),
        {},
        False,
        "cannot decide",
    ),
]


@pytest.mark.parametrize(
    ("name", "rep", "thresholds", "passed", "why"), CASES, ids=[c[0] for c in CASES]
)
def test_gate_table(name, rep, thresholds, passed, why):
    d = decide(rep, thresholds)
    assert d.passed is passed, d.reasons
    assert bool(fails(d)) is (not passed)
    if why:
        assert any(why in r for r in fails(d)), d.reasons


def test_every_verdict_line_shows_counts_and_interval():
    # Guards the report's readability: each PASS/FAIL line carries its evidence.
    d = decide(report())
    for line in d.reasons:
        assert "interval [" in line, line
        assert " of " in line or "files" in line, line


def test_defaults_are_not_zero():
    # Guards the requirement: a zero threshold would ship "equal" adapters.
    assert DEFAULT_THRESHOLDS["min_bugfix_gain"] > 0
    assert all(v > 0 for v in DEFAULT_THRESHOLDS.values())


def test_skipped_suite_is_reported():
    d = decide(report(suites=("bugfix",)))
    assert any(r.startswith("SKIP HumanEval") for r in d.reasons)
    assert any(r.startswith("SKIP general") for r in d.reasons)


def test_empty_report_fails():
    # Guards: no evidence means no shipping.
    assert decide({"suites": {}}).passed is False
    assert decide({}).passed is False


def test_report_without_pairs_cannot_decide():
    # Guards: an older report (rates only) is not waved through on point estimates.
    rep = report(suites=("bugfix",))
    del rep["suites"]["bugfix"]["paired"]
    d = decide(rep)
    assert d.passed is False and any("no per-problem pairs" in r for r in fails(d))


@pytest.mark.parametrize(
    "bad",
    [
        {"min_bugfix_gian": 0.1},
        {"min_bugfix_gain": "0.1"},
        {"min_bugfix_gain": True},
        {"max_p_value": 0},
        {"max_p_value": 1.5},
    ],
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
    bad = report()
    bad["suites"]["bugfix"]["paired"]["improved"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_checks_can_be_switched_off():
    # Guards the documented escape hatch for mechanics tests on 2 problems: max_p_value 1
    # and min_bugfix_gain -1 make the improvement check pass whatever the counts.
    rep = report(bf=cells(regressed=1, neither=1), suites=("bugfix",))
    off = {"max_p_value": 1, "min_bugfix_gain": -1, "min_bugfix_exact_fix": 0}
    off |= {"min_bugfix_parses": 0}
    assert decide(rep, off).passed is True
    assert decide(rep).passed is False
