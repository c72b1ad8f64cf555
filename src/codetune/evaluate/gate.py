"""The quality gate: does the candidate (base + adapter) ship?

``decide(report, thresholds)`` is a pure function of an evaluation report (``report.json``,
see ``schemas/report.schema.json``) and thresholds by name. The QualityGate Lambda and the
local runner both call it, so the cloud and the laptop make the same decision. Standard
library only: the Lambda imports it without torch or scipy.

The gate decides on paired evidence: both sides answered the same problems, and the report
keeps, per suite, how many problems the candidate fixed that the base did not (``improved``),
the reverse (``regressed``) and those where both agree (``both`` passed / ``neither``), under
``suites.<suite>.paired`` (the per-problem outcomes are in ``samples.jsonl``).

- **Improvement** (bugfix exact fix): passes only when the gain (candidate minus base) is at
  least ``min_bugfix_gain`` *and* significant: a one-sided exact sign test (McNemar's exact
  test) on the discordant problems, ``p = P(X >= improved)`` for ``X ~ Binomial(improved +
  regressed, 1/2)``, at most ``max_p_value``. With too few problems to reach significance
  even when one problem regresses, the check says "cannot decide: need >= N problems" and
  fails.
- **Non-inferiority** (HumanEval pass@1, and the general-code loss): the upper confidence
  bound of the loss must stay below the margin. HumanEval: Newcombe's hybrid score interval
  for a difference of paired proportions (Newcombe 1998, method 10; built from Wilson
  intervals, sound at 0 and 1 where a Wald interval is not). General-code loss (the
  forgetting guard, ``suites.general``): percentile bootstrap over the held-out files of
  the per-file relative change of per-token loss (10,000 resamples, fixed seed).
- **Floors** are absolute and judged on the point estimate; their line shows the count and
  a Wilson interval.

Every bound is one-sided at level ``1 - max_p_value``; the interval printed beside it is the
two-sided ``1 - 2 * max_p_value`` interval whose end is that bound (90% at the default).

=============================  =======  ====================================================
threshold                      default  why this default
=============================  =======  ====================================================
``max_p_value``                0.05     the conventional one-sided level: a candidate with
                                        no real effect passes the improvement check at most
                                        1 time in 20. It also sets the smallest decidable
                                        sample: 8 problems at 0.05 (see ``min_problems``).
``min_bugfix_gain``            0.02     the adapter exists to fix this codebase's bugs: it
                                        must beat the base model by a margin worth its
                                        serving cost and risk, not merely tie it. The margin
                                        alone never passes a lucky flip: significance is
                                        required too.
``max_humaneval_regression``   0.05     catastrophic forgetting guard: the loss's upper
                                        bound must stay below 5 points. Not zero: no finite
                                        sample bounds a loss at zero, and small fine-tunes
                                        flip a few problems in both directions; 5 points (8
                                        of 164 problems) is a real loss of skill.
``max_general_loss_increase``  0.05     forgetting guard that works for any base model,
                                        even one that scores 0 on HumanEval: the upper bound
                                        of the mean relative increase of per-token loss on
                                        held-out general Python code. 5% separates a
                                        narrow fine-tune (the demo's adapter moves it by
                                        less than 1%, benchmarks/RESULTS.md) from damage
                                        (random large LoRA weights: more than +100%).
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
value that cannot trigger (e.g. ``max_humaneval_regression: 1``; ``max_p_value: 1`` with
``min_bugfix_gain: -1`` switches the improvement check off). The local demo runs at these
defaults: its adapter must clear the bugfix floors and gain significantly on its own.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from statistics import NormalDist

from codetune.errors import CodetuneError

DEFAULT_THRESHOLDS: dict[str, float] = {
    "max_p_value": 0.05,
    "min_bugfix_gain": 0.02,
    "max_humaneval_regression": 0.05,
    "max_general_loss_increase": 0.05,
    "min_bugfix_exact_fix": 0.05,
    "min_bugfix_parses": 0.80,
    "min_humaneval_pass1": 0.05,
}
PAIR_CELLS = ("improved", "regressed", "both", "neither")
MIN_GENERAL_FILES = 10  # fewer held-out files than this give no usable bootstrap interval
BOOTSTRAP_RESAMPLES = 10_000
EPS = 1e-9  # metrics are ratios of small integers: 0.12 - 0.10 must not fall below 0.02


@dataclass(frozen=True)
class Decision:
    """The gate's verdict; ``reasons`` has one line per check (passed, failed or skipped)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons)}


def resolve_thresholds(thresholds: dict | None) -> dict[str, float]:
    """Defaults overlaid with ``thresholds``; raises CodetuneError for unknown names,
    non-numeric values (a typo must not silently keep the default) or a ``max_p_value``
    outside (0, 1]."""
    out = dict(DEFAULT_THRESHOLDS)
    for name, value in (thresholds or {}).items():
        if name not in DEFAULT_THRESHOLDS:
            raise CodetuneError(
                f"unknown quality-gate threshold {name!r}; known: {', '.join(sorted(DEFAULT_THRESHOLDS))}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise CodetuneError(f"threshold {name} must be a number, got {value!r}")
        out[name] = float(value)
    if not 0 < out["max_p_value"] <= 1:
        raise CodetuneError(
            f"threshold max_p_value must be in (0, 1] (1 switches significance off), got "
            f"{out['max_p_value']!r}"
        )
    return out


# ---------------------------------------------------------------- statistics


def sign_test_p(improved: int, regressed: int) -> float:
    """One-sided exact sign test (McNemar's exact test) on the discordant pairs:
    ``P(X >= improved)`` for ``X ~ Binomial(improved + regressed, 1/2)``; 1.0 with none."""
    m = improved + regressed
    if m == 0:
        return 1.0
    return sum(math.comb(m, k) for k in range(improved, m + 1)) / 2**m


def min_problems(max_p_value: float) -> int:
    """The smallest number of problems at which the sign test can reach ``max_p_value`` with
    one regressed problem: the least ``m`` with ``P(X >= m - 1 | m) = (m + 1) / 2**m <= p``.
    Below it only a clean sweep could pass, and a fine-tune that flips no problem the wrong
    way is not what a gate should wait for (8 at p = 0.05)."""
    m = 1
    while (m + 1) / 2**m > max_p_value:
        m += 1
    return m


def wilson(k: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes of ``n`` at normal quantile ``z``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def paired_diff_interval(
    improved: int, regressed: int, both: int, neither: int, z: float
) -> tuple[float, float]:
    """Interval for ``candidate rate - base rate`` from paired binary outcomes: Newcombe's
    hybrid score interval (1998, method 10) at normal quantile ``z``."""
    a, b, c, d = both, improved, regressed, neither
    n = a + b + c + d
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n  # candidate, base
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    theta = p1 - p2
    return max(-1.0, theta - delta), min(1.0, theta + eps)


def bootstrap_mean_interval(values: list[float], level: float) -> tuple[float, float]:
    """Percentile bootstrap interval (two-sided ``level``) of the mean of ``values``:
    ``BOOTSTRAP_RESAMPLES`` resamples with a fixed seed, so the gate is reproducible."""
    rng = random.Random(0)
    n = len(values)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(BOOTSTRAP_RESAMPLES))
    tail = (1 - level) / 2
    lo = means[int(math.floor(tail * (BOOTSTRAP_RESAMPLES - 1)))]
    hi = means[int(math.ceil((1 - tail) * (BOOTSTRAP_RESAMPLES - 1)))]
    return lo, hi


# ---------------------------------------------------------------- report access


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


def _paired(report: dict, suite: str) -> dict[str, int] | None:
    """The suite's paired counts, or None when the report has none (an older report)."""
    cells = report["suites"][suite].get("paired")
    if cells is None:
        return None
    if not isinstance(cells, dict) or any(
        isinstance(cells.get(k), bool) or not isinstance(cells.get(k), int) or cells[k] < 0
        for k in PAIR_CELLS
    ):
        raise CodetuneError(
            f"report suites.{suite}.paired must give non-negative integers {', '.join(PAIR_CELLS)}"
        )
    return {k: cells[k] for k in PAIR_CELLS}


def _counts(c: dict[str, int]) -> str:
    n = sum(c.values())
    return (
        f"{c['improved']} improved / {c['regressed']} regressed / "
        f"{c['both'] + c['neither']} unchanged of {n}"
    )


def _pct(level: float) -> str:
    return f"{100 * level:g}%"


# ---------------------------------------------------------------- the decision


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
    alpha = t["max_p_value"]
    # One-sided bounds at 1 - alpha; at alpha >= 0.5 (significance switched off) the
    # "interval" is the point estimate.
    z = NormalDist().inv_cdf(1 - alpha) if alpha < 0.5 else 0.0
    level = _pct(max(0.0, 1 - 2 * alpha))
    checks: list[tuple[bool, str] | str] = []
    for name, suite_checks in (
        ("bugfix", _bugfix_checks),
        ("humaneval", _humaneval_checks),
        ("general", _general_checks),
    ):
        if name in suites:
            checks += suite_checks(report, t, alpha, z, level)
        else:
            checks.append(f"SKIP {_SUITE_CHECKS[name]}: suite not in report")
    reasons = [c if isinstance(c, str) else ("PASS " if c[0] else "FAIL ") + c[1] for c in checks]
    if not any(isinstance(c, tuple) for c in checks):
        return Decision(False, [*reasons, "FAIL no known suite in report"])
    return Decision(all(c[0] for c in checks if isinstance(c, tuple)), reasons)


_SUITE_CHECKS = {
    "bugfix": "bugfix checks",
    "humaneval": "HumanEval checks",
    "general": "general-code loss check",
}


def _bugfix_checks(report: dict, t: dict, alpha: float, z: float, level: str) -> list:
    """Improvement (significant gain) and the exact-fix and parse floors."""
    base = _metric(report, "bugfix", "base", "exact_fix")
    cand = _metric(report, "bugfix", "candidate", "exact_fix")
    parses = _metric(report, "bugfix", "candidate", "parses")
    cells = _paired(report, "bugfix")
    out: list[tuple[bool, str]] = []
    if cells is None:
        out.append(
            (
                False,
                "bugfix exact-fix gain: cannot decide: the report has no per-problem pairs "
                "(suites.bugfix.paired); re-run the evaluation",
            )
        )
        n = int(report["suites"]["bugfix"].get("n") or 0)
    else:
        n = sum(cells.values())
        out.append(_improvement(cells, base, cand, t, alpha, z, level))
    fixed = round(cand * n)
    lo, hi = wilson(fixed, n, z)
    out.append(
        (
            cand + EPS >= t["min_bugfix_exact_fix"],
            f"bugfix exact-fix {cand:.3f} ({fixed} of {n}; {level} interval "
            f"[{lo:.3f}, {hi:.3f}]); floor {t['min_bugfix_exact_fix']:.3f}",
        )
    )
    parsed = round(parses * n)
    lo, hi = wilson(parsed, n, z)
    out.append(
        (
            parses + EPS >= t["min_bugfix_parses"],
            f"bugfix answers parse {parses:.3f} ({parsed} of {n}; {level} interval "
            f"[{lo:.3f}, {hi:.3f}]); floor {t['min_bugfix_parses']:.3f}",
        )
    )
    return out


def _humaneval_checks(report: dict, t: dict, alpha: float, z: float, level: str) -> list:
    """Non-inferiority of pass@1 and its floor (capped at the base model's own score)."""
    base = _metric(report, "humaneval", "base", "pass@1")
    cand = _metric(report, "humaneval", "candidate", "pass@1")
    cells = _paired(report, "humaneval")
    margin = t["max_humaneval_regression"]
    out: list[tuple[bool, str]] = []
    if cells is None:
        out.append(
            (
                False,
                "HumanEval pass@1 regression: cannot decide: the report has no per-problem "
                "pairs (suites.humaneval.paired); re-run the evaluation",
            )
        )
        n = int(report["suites"]["humaneval"].get("n") or 0)
    else:
        n = sum(cells.values())
        lo, hi = paired_diff_interval(**cells, z=z)
        loss_bound = -lo
        out.append(
            (
                loss_bound < margin + EPS,
                f"HumanEval pass@1 change {cand - base:+.3f} (base {base:.3f} -> candidate "
                f"{cand:.3f}; {_counts(cells)}); loss upper bound {loss_bound:.3f} "
                f"({level} interval [{lo:+.3f}, {hi:+.3f}] of the change); "
                f"must stay below {margin:.3f}"
                + ("" if loss_bound < margin + EPS else ": non-inferiority not shown"),
            )
        )
    floor = min(t["min_humaneval_pass1"], base)
    capped = (
        " (the base model's score, below the configured floor)"
        if floor < t["min_humaneval_pass1"]
        else ""
    )
    passed_n = round(cand * n)
    lo, hi = wilson(passed_n, n, z)
    out.append(
        (
            cand + EPS >= floor,
            f"HumanEval pass@1 {cand:.3f} ({passed_n} of {n}; {level} interval "
            f"[{lo:.3f}, {hi:.3f}]); floor {floor:.3f}{capped}",
        )
    )
    return out


def _general_checks(report: dict, t: dict, alpha: float, z: float, level: str) -> list:
    """Non-inferiority of the per-token loss on held-out general code."""
    return [_general(report["suites"]["general"], t, alpha, level)]


def _improvement(cells, base, cand, t, alpha, z, level) -> tuple[bool, str]:
    n = sum(cells.values())
    gain = (cells["improved"] - cells["regressed"]) / n if n else 0.0
    head = (
        f"bugfix exact-fix gain {gain:+.3f} (base {base:.3f} -> candidate {cand:.3f}; "
        f"{_counts(cells)})"
    )
    need_n = min_problems(alpha)
    if n < need_n:
        return False, (
            f"{head}: cannot decide: need >= {need_n} problems for a sign test at p <= {alpha:g}"
        )
    p = sign_test_p(cells["improved"], cells["regressed"])
    lo, hi = paired_diff_interval(**cells, z=z)
    stats = f"p={p:.2g}, {level} interval [{lo:+.3f}, {hi:+.3f}]"
    need = f"need gain >= {t['min_bugfix_gain']:+.3f} at p <= {alpha:g}"
    if gain + EPS < t["min_bugfix_gain"]:
        return False, f"{head}: gain below the margin ({stats}); {need}"
    if p > alpha:
        return False, (
            f"{head}: not significant (p={p:.2g} > {alpha:g}; {level} interval "
            f"[{lo:+.3f}, {hi:+.3f}]); {need}"
        )
    return True, f"{head}: significant ({stats}); {need}"


def _general(entry: dict, t, alpha, level) -> tuple[bool, str]:
    """The forgetting guard: mean per-file relative change of per-token loss on held-out
    general code, candidate vs base; its upper bootstrap bound must stay below the margin."""
    files = entry.get("files") if isinstance(entry, dict) else None
    if not isinstance(files, list):
        raise CodetuneError("report suites.general has no files list; is it a codetune report?")
    rel = []
    for f in files:
        b, c = f.get("base"), f.get("candidate")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (b, c)):
            raise CodetuneError(f"report suites.general file {f.get('path')!r} lacks losses")
        if b > 0:
            rel.append(c / b - 1)
    margin = t["max_general_loss_increase"]
    better = sum(1 for r in rel if r < -EPS)
    worse = sum(1 for r in rel if r > EPS)
    counts = f"{better} improved / {worse} regressed / {len(rel) - better - worse} unchanged files"
    head = "general-code loss (held-out Python, per token)"
    if len(rel) < MIN_GENERAL_FILES:
        return False, (
            f"{head}: cannot decide: need >= {MIN_GENERAL_FILES} held-out files, have "
            f"{len(rel)} ({counts})"
        )
    mean = math.fsum(rel) / len(rel)
    lo, hi = bootstrap_mean_interval(rel, max(0.0, 1 - 2 * alpha))
    base = entry.get("base", {}).get("loss")
    cand = entry.get("candidate", {}).get("loss")
    losses = f"base {base:.3f} -> candidate {cand:.3f}; " if base is not None else ""
    passed = hi < margin + EPS
    return passed, (
        f"{head} change {mean:+.1%} ({losses}{counts}); upper bound {hi:+.1%} "
        f"({level} bootstrap interval [{lo:+.1%}, {hi:+.1%}]); must stay below {margin:+.1%}"
        + ("" if passed else ": the adapter damages general code modelling")
    )
