"""Verifiable rewards for the GRPO stage: pure functions, no model, no I/O.

codetune knows the correct function for every injected bug, so a bug fix can be *checked*
rather than judged by a reward model. Each reward takes the completions of one generation
batch and, aligned with them, the reference (correct) function of each completion's prompt,
and returns one float per completion. Every score is explained on the ``codetune.train.rewards``
logger at DEBUG level (``exact_fix[3]=0: answer AST differs from the reference``).

The functions double as TRL ``GRPOTrainer`` reward functions: TRL calls them with
``prompts=``, ``completions=`` (strings, or ``[{"role": "assistant", "content": ...}]`` for
conversational datasets), ``completion_ids=`` and every dataset column as a keyword argument;
the dataset built by :mod:`codetune.train.grpo` has a ``reference`` column. TRL names the
logged metric after ``__name__``, so the function names equal the keys of
:data:`codetune.train.rl_config.DEFAULT_REWARD_WEIGHTS`.

Rewards (all in a fixed range so the weights in the config mean what they say):

- ``exact_fix`` (0 or 1): the answer's code (:func:`codetune.prompts.extract_code`) has the
  same AST as the reference after normalisation (:func:`normalized_ast`): formatting and
  comments never matter (the AST has none), and **docstrings are removed** before comparing,
  because a bug fix is about behaviour and a model that paraphrases or shortens a docstring
  has still fixed the bug. Everything else (names, constants, statement order, extra imports
  or helper functions) must match.
  Other languages (the ``language`` column, :mod:`codetune.languages`; Python without it):
  the tree-sitter trees compared (:func:`codetune.data.treesitter.canonical`: node types and
  token texts, comments dropped), so layout and comments never matter there either.
- ``parses`` (0 or 1): the answer's code is non-empty and is valid in its language (Python:
  ``ast.parse``; others: a tree-sitter parse with no error node).
- ``format`` (0 or 1): exactly one fenced code block, opened with the language's tag (``python``
  or ``py``; ``java``; ``go``; ...) and closed, with nothing but white space after the closing fence. Text before the block
  is tolerated (the prompt asks for code only, but nothing downstream breaks on a preamble).
- ``length_penalty`` (-1..0): ``-min(1, excess / len(expected))`` where ``expected`` is the
  reference rendered as an answer (:func:`codetune.prompts.code_answer`) and ``excess`` the
  characters by which the whole completion is longer. Characters, not tokens, keep it pure
  and tokenizer-independent; the default weight (0.05) makes it a tie-breaker, not a goal.
"""

from __future__ import annotations

import ast
import logging
import re
import textwrap
from collections.abc import Callable, Sequence

from codetune import languages
from codetune.prompts import FENCE, code_answer, count_blocks, extract_code

log = logging.getLogger(__name__)

# A language-tagged opening fence at the start of a line.
_OPEN = {
    "python": re.compile(r"[ \t]*```[ \t]*(?:python3?|py)[ \t]*"),
    "javascript": re.compile(r"[ \t]*```[ \t]*(?:javascript|js|jsx)[ \t]*"),
    "typescript": re.compile(r"[ \t]*```[ \t]*(?:typescript|ts|tsx)[ \t]*"),
    "java": re.compile(r"[ \t]*```[ \t]*java[ \t]*"),
    "go": re.compile(r"[ \t]*```[ \t]*(?:go|golang)[ \t]*"),
    "cpp": re.compile(r"[ \t]*```[ \t]*(?:cpp|c\+\+|cxx|cc)[ \t]*"),
}


def completion_text(completion) -> str:
    """The assistant text of one completion as TRL passes it (a string or a message list)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    raise TypeError(f"cannot read a completion of type {type(completion).__name__}")


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError):  # ValueError: source contains NUL bytes
        return None


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                # Keep the body non-empty: a function that was only a docstring becomes `pass`.
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalized_ast(code: str) -> str | None:
    """Canonical form of ``code`` for exact-fix comparison, or ``None`` when it does not parse.

    ``ast.dump`` without line/column attributes, after removing docstrings: two snippets
    compare equal exactly when they differ only in layout, comments and docstrings.
    """
    tree = _parse(code)
    if tree is None:
        return None
    return ast.dump(_strip_docstrings(tree), include_attributes=False)


def normalized_tree(code: str, language: str | None = None) -> str | None:
    """:func:`normalized_ast` for Python (``language`` None or ``"python"``), the tree-sitter
    tree without comments (:func:`codetune.data.treesitter.canonical`) for the others;
    ``None`` when ``code`` does not parse. Raises ``ValueError`` for an unknown language."""
    if language in (None, "python"):
        return normalized_ast(code)
    from codetune.data import treesitter

    if language not in treesitter.SYNTAX:
        raise ValueError(f"unknown language {language!r}")
    return treesitter.canonical(language, code)


# Each scorer returns (score, reason); the public rewards log the reason and return scores.


def _score_exact_fix(answer: str, reference: str, language: str | None) -> tuple[float, str]:
    code = extract_code(answer)
    got = normalized_tree(code, language)
    if got is None:
        return 0.0, "answer code does not parse"
    want = normalized_tree(reference, language)
    if want is None:
        # A broken reference is a data bug, not the model's fault; score 0 and say so.
        return 0.0, "reference does not parse (dataset problem)"
    if got == want:
        return 1.0, "answer AST equals the reference"
    return 0.0, "answer AST differs from the reference"


def _score_parses(answer: str, reference: str, language: str | None) -> tuple[float, str]:
    code = extract_code(answer)
    if not code.strip():
        return 0.0, "answer has no code"
    if normalized_tree(code, language) is None:
        return 0.0, f"answer code is not valid {languages.get(language).display}"
    return 1.0, "answer code parses"


def _score_format(answer: str, reference: str, language: str | None) -> tuple[float, str]:
    blocks = count_blocks(answer)
    if answer.count(FENCE) % 2:
        return 0.0, "unterminated code block (odd number of fences)"
    if blocks != 1:
        return 0.0, f"{blocks} code blocks, expected exactly 1"
    first = answer.index(FENCE)
    line_start = answer.rfind("\n", 0, first) + 1
    line_end = answer.find("\n", first)
    tag = languages.get(language).fence
    if line_end < 0 or not _OPEN[languages.get(language).name].fullmatch(
        answer[line_start:line_end]
    ):
        return 0.0, f"the code block is not opened with ```{tag} on its own line"
    tail = answer[answer.rindex(FENCE) + len(FENCE) :]
    if tail.strip():
        return 0.0, f"{len(tail.strip())} characters after the code block"
    return 1.0, f"one ```{tag} block, nothing after it"


def _score_length_penalty(answer: str, reference: str, language: str | None) -> tuple[float, str]:
    expected = len(code_answer(reference, language))
    excess = len(answer.strip()) - expected
    if excess <= 0:
        return 0.0, f"{len(answer.strip())} chars <= expected {expected}"
    penalty = -min(1.0, excess / max(expected, 1))
    return penalty, f"{excess} chars beyond expected {expected}"


def _apply(
    name: str,
    scorer: Callable[[str, str, str | None], tuple[float, str]],
    completions: Sequence,
    reference: Sequence[str],
    language: Sequence[str | None] | None,
) -> list[float]:
    if len(completions) != len(reference):
        raise ValueError(
            f"{name}: {len(completions)} completions but {len(reference)} references; "
            "pass one reference per completion (TRL repeats dataset columns per generation)"
        )
    if language is None:
        language = [None] * len(reference)
    elif len(language) != len(reference):
        raise ValueError(f"{name}: {len(language)} languages for {len(reference)} references")
    scores = []
    for i, (completion, ref, lang) in enumerate(zip(completions, reference, language, strict=True)):
        score, reason = scorer(completion_text(completion), ref, lang)
        log.debug("%s[%d]=%.4g: %s", name, i, score, reason)
        scores.append(score)
    return scores


# ``language``: one codetune.languages name per completion (TRL passes the dataset's
# ``language`` column), or None for Python throughout.


def exact_fix(
    completions: Sequence, reference: Sequence[str], language=None, **_: object
) -> list[float]:
    """1.0 where the answer's normalised tree equals the reference function's, else 0.0."""
    return _apply("exact_fix", _score_exact_fix, completions, reference, language)


def parses(
    completions: Sequence, reference: Sequence[str], language=None, **_: object
) -> list[float]:
    """1.0 where the answer's code is non-empty and valid in its language, else 0.0."""
    return _apply("parses", _score_parses, completions, reference, language)


def format(
    completions: Sequence, reference: Sequence[str], language=None, **_: object
) -> list[float]:  # noqa: A001
    """1.0 where the answer is exactly one closed block tagged with its language (```python)
    with nothing after it."""
    return _apply("format", _score_format, completions, reference, language)


def length_penalty(
    completions: Sequence, reference: Sequence[str], language=None, **_: object
) -> list[float]:
    """0.0 up to the expected answer length, then down to -1.0 at twice that length."""
    return _apply("length_penalty", _score_length_penalty, completions, reference, language)


# name -> reward function; the names are the keys of rl_config.DEFAULT_REWARD_WEIGHTS.
REWARDS: dict[str, Callable[..., list[float]]] = {
    "exact_fix": exact_fix,
    "parses": parses,
    "format": format,
    "length_penalty": length_penalty,
}


def score_all(
    completions: Sequence, reference: Sequence[str], language=None
) -> dict[str, list[float]]:
    """Every reward on the same completions (for measurements and reports)."""
    return {name: fn(completions, reference, language) for name, fn in REWARDS.items()}


def weighted_total(scores: dict[str, list[float]], weights: dict[str, float]) -> list[float]:
    """Per-completion weighted sum, as GRPO combines the rewards before computing advantages."""
    n = len(next(iter(scores.values()))) if scores else 0
    return [sum(weights.get(k, 0.0) * scores[k][i] for k in scores) for i in range(n)]
