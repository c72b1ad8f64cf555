"""Reward functions of the GRPO stage on hand-made completions (pure, fast)."""

from __future__ import annotations

import logging

import pytest

from codetune.prompts import code_answer
from codetune.train import rewards
from codetune.train.rl_config import DEFAULT_REWARD_WEIGHTS

REF = '''def clamp(x, lo, hi):
    """Clamp x into [lo, hi]."""
    if x < lo:
        return lo
    return min(x, hi)'''

# The same function laid out differently, with comments and a reworded docstring.
SAME_DIFFERENT_LAYOUT = '''def clamp(x, lo, hi):
    # keep x in range
    """Return x clamped."""
    if (x < lo):   # below
        return lo

    return min(x,
               hi)'''

WRONG_FIX = REF.replace("x < lo", "x <= lo - 1")
BUGGY = REF.replace("x < lo", "x > lo")


def one(fn, answer, ref=REF):
    return fn([answer], [ref])[0]


def test_registry_names_match_config_keys():
    # The config's reward_weights keys and TRL's metric names (function __name__) must agree.
    assert set(rewards.REWARDS) == set(DEFAULT_REWARD_WEIGHTS)
    assert all(fn.__name__ == name for name, fn in rewards.REWARDS.items())


def test_exact_fix_accepts_the_reference_itself():
    # The correct function, answered in the expected format, is an exact fix.
    assert one(rewards.exact_fix, code_answer(REF)) == 1.0


def test_exact_fix_ignores_layout_comments_and_docstrings():
    # Documented normalisation: AST equality after dropping docstrings.
    assert one(rewards.exact_fix, code_answer(SAME_DIFFERENT_LAYOUT)) == 1.0


def test_exact_fix_ignores_indentation_of_the_whole_answer():
    # A method answered at class indentation still compares (dedent before parsing).
    indented = "\n".join("    " + line for line in REF.splitlines())
    assert one(rewards.exact_fix, code_answer(indented)) == 1.0


def test_exact_fix_rejects_the_buggy_and_a_different_fix():
    # Behaviour-changing or merely different code is not an exact fix.
    assert one(rewards.exact_fix, code_answer(BUGGY)) == 0.0
    assert one(rewards.exact_fix, code_answer(WRONG_FIX)) == 0.0


def test_exact_fix_rejects_extra_code():
    # An extra import changes the module AST: not the exact fix.
    assert one(rewards.exact_fix, code_answer("import os\n" + REF)) == 0.0


def test_exact_fix_and_parses_zero_for_non_parsing_answer():
    broken = code_answer("def clamp(x, lo, hi)\n    return x")
    assert one(rewards.exact_fix, broken) == 0.0
    assert one(rewards.parses, broken) == 0.0


def test_parses_scores_valid_code_and_rejects_empty():
    # Valid but wrong code still parses; an answer with no code does not.
    assert one(rewards.parses, code_answer(BUGGY)) == 1.0
    assert one(rewards.parses, "```python\n\n```") == 0.0
    assert one(rewards.parses, "") == 0.0


def test_parses_reads_an_unterminated_block():
    # Truncated generations (no closing fence) are still read up to the end.
    assert one(rewards.parses, "```python\n" + REF) == 1.0


def test_format_accepts_one_python_block_with_trailing_newline():
    assert one(rewards.format, code_answer(REF) + "\n\n") == 1.0


def test_format_rejects_two_blocks():
    assert one(rewards.format, code_answer(REF) + "\n" + code_answer(REF)) == 0.0


def test_format_rejects_text_after_the_block():
    assert one(rewards.format, code_answer(REF) + "\nThis fixes the comparison.") == 0.0


def test_format_rejects_untagged_unterminated_and_missing_blocks():
    assert one(rewards.format, "```\n" + REF + "\n```") == 0.0
    assert one(rewards.format, "```python\n" + REF) == 0.0
    assert one(rewards.format, REF) == 0.0


def test_format_tolerates_text_before_the_block():
    # Documented choice: a preamble is tolerated, only text after the block is penalised.
    assert one(rewards.format, "Fixed:\n" + code_answer(REF)) == 1.0


def test_length_penalty_zero_up_to_the_expected_length():
    assert one(rewards.length_penalty, code_answer(REF)) == 0.0
    assert one(rewards.length_penalty, "```python\npass\n```") == 0.0


def test_length_penalty_grows_with_excess_and_is_capped():
    expected = len(code_answer(REF))
    half = one(rewards.length_penalty, code_answer(REF) + "\n" + "x" * (expected // 2 - 1))
    assert half == pytest.approx(-0.5, abs=0.01)
    assert one(rewards.length_penalty, code_answer(REF) + "y" * (10 * expected)) == -1.0


def test_conversational_completions_and_kwargs_from_trl():
    # TRL passes message lists plus prompts/completion_ids/trainer_state as keyword arguments.
    completions = [
        [{"role": "assistant", "content": code_answer(REF)}],
        [{"role": "assistant", "content": "no"}],
    ]
    got = rewards.exact_fix(
        prompts=[[], []],
        completions=completions,
        completion_ids=[[1], [2]],
        reference=[REF, REF],
        trainer_state=None,
        log_extra=None,
        log_metric=None,
    )
    assert got == [1.0, 0.0]


def test_misaligned_references_fail_loudly():
    with pytest.raises(ValueError, match="one reference per completion"):
        rewards.parses(["a", "b"], [REF])


def test_every_score_is_explained_in_the_debug_log(caplog):
    # each reward explains itself in a debug log, one line per completion.
    caplog.set_level(logging.DEBUG, logger="codetune.train.rewards")
    rewards.format([code_answer(REF) + "\ntrailing"], [REF])
    assert "format[0]=0: " in caplog.text and "characters after the code block" in caplog.text


def test_weighted_total_combines_as_configured():
    scores = rewards.score_all([code_answer(REF), code_answer(BUGGY) + " extra"], [REF, REF])
    totals = rewards.weighted_total(scores, DEFAULT_REWARD_WEIGHTS)
    # The exact fix outranks a well-formed wrong answer by at least the exact_fix weight.
    assert totals[0] - totals[1] >= DEFAULT_REWARD_WEIGHTS["exact_fix"]
