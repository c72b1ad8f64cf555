"""The ONE place the training metric line format lives.

The trainer prints one line per logging step; SageMaker turns them into CloudWatch metrics
with ``MetricDefinitions`` (regexes). The CDK app and ``codetune train --remote`` both take
their definitions from :func:`metric_definitions`, so the format and the regexes cannot drift.

Example line::

    [codetune] step=10 loss=1.234500 learning_rate=0.000200 tokens_per_second=512.3 epoch=0.50
"""

from __future__ import annotations

import re

PREFIX = "[codetune]"
# Metrics the trainer may print; the order here is the order on the line.
METRIC_NAMES = (
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "epoch",
    "reward",
    # one mean per GRPO reward function (codetune.train.rewards), so each is charted
    "reward_exact_fix",
    "reward_parses",
    "reward_format",
    "reward_length_penalty",
    "kl",
    "completion_length",
)
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def format_metrics(step: int, values: dict[str, float]) -> str:
    """Render one metric line; keys not in METRIC_NAMES are appended sorted (``reward_<name>``)."""
    parts = [PREFIX, f"step={int(step)}"]
    known = [k for k in METRIC_NAMES if k in values]
    extra = sorted(k for k in values if k not in METRIC_NAMES)
    for k in known + extra:
        v = values[k]
        if v is None:
            continue
        parts.append(f"{k}={float(v):.6g}")
    return " ".join(parts)


def parse_metrics(line: str) -> dict[str, float] | None:
    """Inverse of :func:`format_metrics`; ``None`` for lines that are not metric lines."""
    if not line.startswith(PREFIX + " "):
        return None
    out: dict[str, float] = {}
    for tok in line[len(PREFIX) :].split():
        k, _, v = tok.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            return None
    return out


def metric_definitions(extra: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """SageMaker ``MetricDefinitions`` (``Name``/``Regex``) matching :func:`format_metrics`."""
    names = list(METRIC_NAMES) + [e for e in extra if e not in METRIC_NAMES]
    return [
        {"Name": f"train:{n}", "Regex": re.escape(PREFIX) + r".*? " + re.escape(n) + "=" + _NUMBER}
        for n in names
    ]
