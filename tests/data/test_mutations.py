"""Mutation operators, property-based over real standard-library functions."""

from __future__ import annotations

import ast
import inspect
import random
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codetune.data.mutations import CATALOGUE, SYNTAX_OPERATORS, mutate, parse_function


def _stdlib_functions() -> list[str]:
    import argparse
    import bisect
    import heapq
    import json.decoder
    import json.encoder
    import shlex
    import textwrap as tw

    out = []
    for mod in (argparse, bisect, heapq, json.encoder, json.decoder, shlex, tw):
        tree = ast.parse(inspect.getsource(mod))
        lines = inspect.getsource(mod).split("\n")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 3:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                code = textwrap.dedent("\n".join(lines[first - 1 : node.end_lineno])) + "\n"
                try:
                    parse_function(code)
                except SyntaxError:
                    continue
                out.append(code)
    return out


FUNCTIONS = _stdlib_functions()


def _diff_region(a: str, b: str) -> tuple[int, int, int]:
    """Common prefix length and the lengths of the differing middles of a and b."""
    lo = 0
    while lo < min(len(a), len(b)) and a[lo] == b[lo]:
        lo += 1
    hi = 0
    while hi < min(len(a), len(b)) - lo and a[-1 - hi] == b[-1 - hi]:
        hi += 1
    return lo, len(a) - lo - hi, len(b) - lo - hi


@pytest.mark.parametrize("op", sorted(CATALOGUE))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from(FUNCTIONS), seed=st.integers(0, 2**16))
def test_operator_invariants(op: str, code: str, seed: int) -> None:
    # Guards the verification contract of every operator: original parses, mutant differs in
    # one small place, semantic mutants parse to one function, syntax mutants do not parse.
    fn = parse_function(code)
    mutant = mutate(code, fn, op, random.Random(seed))
    if mutant is None:
        return
    assert mutant != code
    lo, removed, added = _diff_region(code, mutant)
    # single point: one contiguous change, a few lines at most (a negated multi-line
    # condition or a swap of two multi-line arguments spans several)
    assert code[lo : lo + removed].count("\n") <= 8 and mutant[lo : lo + added].count("\n") <= 8
    if op in SYNTAX_OPERATORS:
        with pytest.raises(SyntaxError):
            ast.parse(mutant)
    else:
        tree = ast.parse(mutant)
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.FunctionDef)
        assert ast.dump(tree) != ast.dump(ast.parse(code))


@pytest.mark.parametrize("op", sorted(CATALOGUE))
def test_every_operator_applies_to_real_code(op: str) -> None:
    # Guards against an operator that silently never fires (the property test above would
    # then pass vacuously): each one mutates a good share of real stdlib functions.
    hits = sum(
        mutate(code, parse_function(code), op, random.Random(0)) is not None for code in FUNCTIONS
    )
    assert hits >= 5, f"{op} mutated only {hits} of {len(FUNCTIONS)} functions"


def test_mutation_is_deterministic_for_a_seed() -> None:
    # Guards determinism of the dataset: the same seed picks the same site.
    code = FUNCTIONS[10]
    fn = parse_function(code)
    for op in CATALOGUE:
        assert mutate(code, fn, op, random.Random(7)) == mutate(code, fn, op, random.Random(7))


def test_compare_flip_changes_only_the_operator() -> None:
    # Guards that edits are exact byte-range edits that keep formatting and comments.
    code = (
        "def f(a, b):\n    # keep: a < b\n    if a < b:  # note\n        return a\n    return b\n"
    )
    mutant = mutate(code, parse_function(code), "compare_flip", random.Random(0))
    assert mutant == code.replace("if a < b:", "if a <= b:")


def _whole_parses(code: str) -> bool:
    """Whether ``code`` parses as one statement (the reference the shortcut must match)."""
    try:
        return len(ast.parse(code).body) == 1
    except SyntaxError:
        return False


STATEMENT_CASES = [
    # (function, text to replace, replacement, whole function parses after?)
    ("def f(a, b):\n    if a < b: return a; x = 1\n    return b\n", "x = 1", "x = 1 +", False),
    ("def f(a, b):\n    if a < b: return a; x = 1\n    return b\n", "x = 1", "x = (1)", True),
    (
        "def f(a):\n    if a:\n        pass\n    else:\n        a = a < 1\n    return a\n",
        "a < 1",
        "a <= 1",
        True,
    ),
    ("def f(a):\n    try:\n        g(a, 1)\n    except E:\n        h(a)\n", "h(a)", "h(a,)", True),
    (
        "def f(a):\n    try:\n        g(a, 1)\n    except E:\n        h(a)\n",
        "h(a)",
        "h(a,,)",
        False,
    ),
    ("def f(a):\n    match a:\n        case 1:\n            return a[0]\n", "a[0]", "a[1]", True),
    ("def f(a):\n    match a:\n        case 1:\n            return a[0]\n", "a[0]", "a[0", False),
    (
        "def f(a):\n    for x in a:\n        while x:\n            x = (x\n   - 1)\n",
        "- 1",
        "+ 1",
        True,
    ),
    ("@dec(1)\ndef f(a):\n    return a\n", "dec(1)", "dec(2)", True),
    ("@dec(1)\ndef f(a):\n    return a\n", "dec(1)", "dec(1", False),
    ("def f(a=1):\n    return a\n", "a=1", "a=2", True),
    ("async def f(a):\n    async for x in a:\n        await x\n", "await x", "await y", True),
    ("def f(a):\n    return a\n", "return a", "return a b", False),
    # headers of compound statements (checked with `pass` for a body)
    (
        "def f(a):\n    if a < 1:\n        @dec\n        def g(): pass\n    return a\n",
        "a < 1",
        "a <= 1",
        True,
    ),
    ("def f(a):\n    if a < 1: return a\n    return 0\n", "a < 1:", "a < 1", False),
    ("def f(a):\n    for x in g(a):\n        # note\n        y = x\n", "g(a)", "g(a", False),
    ("def f(a):\n    with g(a) as b, h(a) as c:\n        pass\n", "g(a) as b", "g(b) as b", True),
]


@pytest.mark.parametrize("code,old,new,ok", STATEMENT_CASES)
def test_statement_parse_agrees_with_whole_function(code, old, new, ok) -> None:
    # Guards the shortcut that verifies a semantic mutant by parsing only its smallest
    # enclosing statement: on the hard cases (a statement after `if x:` or `;` on the same
    # line, else/except/match branches whose lines sit left of the statement's own column,
    # a multi-line bracket, the signature and decorators) it agrees with a whole parse.
    from codetune.data.mutations import Mutator

    start = code.encode().index(old.encode())
    edit = (start, start + len(old.encode()), new.encode())
    mutant = code.replace(old, new, 1)
    m = Mutator(code, parse_function(code))
    assert m._statement_parses(edit, mutant) is ok
    assert _whole_parses(mutant) is ok


def test_statement_parse_agrees_on_every_site_of_real_code() -> None:
    # Guards the same shortcut on real code: every candidate edit of every operator (syntax
    # mutants are verified the same way: they must not parse) on the stdlib sample, plus
    # bracket-breaking variants of each, is judged as a parse of the whole function judges it.
    from codetune.data.mutations import Mutator

    n = 0
    for code in FUNCTIONS[:60]:
        m = Mutator(code, parse_function(code))
        b = code.encode()
        for op in sorted(CATALOGUE):
            for start, end, repl in m.sites(op, random.Random(0))[:20]:
                for r in (repl, repl + b" )", b"(" + repl):
                    mutant = (b[:start] + r + b[end:]).decode()
                    want = _whole_parses(mutant)
                    assert m._statement_parses((start, end, r), mutant) is want, (op, mutant)
                    n += 1
    assert n > 1000
