"""Evaluation with executed tests and the quality gate.

Light on import (the QualityGate Lambda imports :mod:`codetune.evaluate.gate` without
torch): the heavy runner is imported on first call.
"""

from __future__ import annotations


def run_evaluation(*args, **kwargs) -> dict:
    """See :func:`codetune.evaluate.runner.run_evaluation`."""
    from codetune.evaluate.runner import run_evaluation as run

    return run(*args, **kwargs)


def score_completions(*args, **kwargs) -> dict:
    """See :func:`codetune.evaluate.runner.score_completions`."""
    from codetune.evaluate.runner import score_completions as score

    return score(*args, **kwargs)
