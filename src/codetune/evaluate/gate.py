"""The quality gate: does the candidate (base + adapter) ship?

``decide(report, thresholds)`` is a pure function of an evaluation report (``report.json``,
see ``schemas/report.schema.json``) and thresholds by name. The QualityGate Lambda and the
local runner both call it, so the cloud and the laptop make the same decision. Standard
library only: the Lambda imports it without torch.

Checks (all metric values are fractions in [0, 1]; gains and regressions are absolute,
candidate minus base):

=============================  =======  ====================================================
threshold                      default  why this default
=============================  =======  ====================================================
``min_bugfix_gain``            0.02     the adapter exists to fix this codebase's bugs: it
                                        must beat the base model, not merely tie it. Zero
                                        would ship adapters that add serving cost and risk
                                        for nothing; 2 points is one fix in 50 problems.
``max_humaneval_regression``   0.05     catastrophic forgetting guard. Not zero: on 164
                                        problems one flipped problem is 0.6 points and
                                        small fine-tunes flip a few in both directions;
                                        5 points (8 problems) is a real loss of skill.
``min_bugfix_exact_fix``       0.05     absolute floor: a candidate that fixes almost
                                        nothing is not worth serving even if the base is
                                        worse still.
``min_bugfix_parses``          0.80     absolute floor: answers that do not parse cannot be
                                        applied by anyone; a fine-tune that breaks the
                                        answer format must not ship.
``min_humaneval_pass1``        0.05     absolute floor on general coding skill, capped at
                                        the base model's own pass@1: an adapter is not
                                        failed for what its base model could never do (the
                                        embedded 135M model scores ~0 on HumanEval); below
                                        the base it is the regression check that decides.
=============================  =======  ====================================================

A check whose suite is not in the report is skipped (the run request chose the suites) and
the reason says so; a report with no suite at all fails. To switch a check off, set it to a
value that cannot trigger (e.g. ``max_humaneval_regression: 1``). The local demo runs at these
defaults: its adapter must clear the bugfix floors and gain on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from codetune.errors import CodetuneError

DEFAULT_THRESHOLDS: dict[str, float] = {
    "min_bugfix_gain": 0.02,
    "max_humaneval_regression": 0.05,
    "min_bugfix_exact_fix": 0.05,
    "min_bugfix_parses": 0.80,
    "min_humaneval_pass1": 0.05,
}


@dataclass(frozen=True)
class Decision:
    """The gate's verdict; ``reasons`` has one line per check (passed, failed or skipped)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons)}


def resolve_thresholds(thresholds: dict | None) -> dict[str, float]:
    """Defaults overlaid with ``thresholds``; raises CodetuneError for unknown names or
    non-numeric values (a typo must not silently keep the default)."""
    out = dict(DEFAULT_THRESHOLDS)
    for name, value in (thresholds or {}).items():
        if name not in DEFAULT_THRESHOLDS:
            raise CodetuneError(
                f"unknown quality-gate threshold {name!r}; known: {', '.join(sorted(DEFAULT_THRESHOLDS))}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise CodetuneError(f"threshold {name} must be a number, got {value!r}")
        out[name] = float(value)
    return out


def _metric(report: dict, suite: str, side: str, metric: str) -> float:
    try:
        value = report["suites"][suite][side][metric]
    except (KeyError, TypeError) as e:
        raise CodetuneError(
            f"report has no suites.{suite}.{side}.{metric}; is it a codetune evaluation report?"
        ) from e
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodetuneError(f"report suites.{suite}.{side}.{metric} is not a number: {value!r}")
    return float(value)


def decide(report: dict, thresholds: dict | None = None) -> Decision:
    """Apply the gate to ``report`` with ``thresholds`` (names as in ``DEFAULT_THRESHOLDS``;
    missing names keep their defaults).

    Returns a :class:`Decision`: passed only when every check that could run passed.
    Raises CodetuneError for unknown threshold names or a report missing a metric of a
    suite it contains.
    """
    t = resolve_thresholds(thresholds)
    suites = report.get("suites") if isinstance(report, dict) else None
    if not isinstance(suites, dict) or not suites:
        return Decision(False, ["report has no evaluated suite: nothing shows the candidate works"])
    reasons: list[str] = []
    ok = True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok = ok and passed
        reasons.append(("PASS " if passed else "FAIL ") + text)

    if "bugfix" in suites:
        base = _metric(report, "bugfix", "base", "exact_fix")
        cand = _metric(report, "bugfix", "candidate", "exact_fix")
        parses = _metric(report, "bugfix", "candidate", "parses")
        gain = cand - base
        # Rounding: metrics are ratios of small integers; compare with a tiny tolerance so
        # 0.12 - 0.10 is not judged below a 0.02 threshold by float error.
        eps = 1e-9
        check(
            gain + eps >= t["min_bugfix_gain"],
            f"bugfix exact-fix gain {gain:+.3f} (base {base:.3f} -> candidate {cand:.3f}); "
            f"need >= {t['min_bugfix_gain']:+.3f}",
        )
        check(
            cand + eps >= t["min_bugfix_exact_fix"],
            f"bugfix exact-fix {cand:.3f}; floor {t['min_bugfix_exact_fix']:.3f}",
        )
        check(
            parses + eps >= t["min_bugfix_parses"],
            f"bugfix answers parse {parses:.3f}; floor {t['min_bugfix_parses']:.3f}",
        )
    else:
        reasons.append("SKIP bugfix checks: suite not in report")
    if "humaneval" in suites:
        base = _metric(report, "humaneval", "base", "pass@1")
        cand = _metric(report, "humaneval", "candidate", "pass@1")
        drop = base - cand
        eps = 1e-9
        check(
            drop <= t["max_humaneval_regression"] + eps,
            f"HumanEval pass@1 change {cand - base:+.3f} (base {base:.3f} -> candidate "
            f"{cand:.3f}); max regression {t['max_humaneval_regression']:.3f}",
        )
        floor = min(t["min_humaneval_pass1"], base)
        capped = (
            " (the base model's score, below the configured floor)"
            if floor < t["min_humaneval_pass1"]
            else ""
        )
        check(cand + eps >= floor, f"HumanEval pass@1 {cand:.3f}; floor {floor:.3f}{capped}")
    else:
        reasons.append("SKIP HumanEval checks: suite not in report")
    if not any(r.startswith(("PASS", "FAIL")) for r in reasons):
        return Decision(False, [*reasons, "FAIL no known suite in report"])
    return Decision(ok, reasons)
