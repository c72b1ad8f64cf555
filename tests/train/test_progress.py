"""Training progress: a bar on a terminal, the SageMaker metric lines everywhere else."""

from __future__ import annotations

import io

from codetune.metrics import format_metrics, parse_metrics
from codetune.train.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


VALUES = {"loss": 1.2345, "learning_rate": 2e-4, "tokens_per_second": 512.3, "epoch": 0.5}


def test_not_a_terminal_prints_the_metric_lines_unchanged():
    # guards the MetricDefinitions contract: off a TTY each logging step is exactly the
    # format_metrics line, nothing else (no bar characters, no carriage returns)
    out = io.StringIO()
    progress = Progress(out)
    progress.start(10)
    for step in (1, 2, 3):
        progress.step(step)
        progress.log(step, VALUES)
    progress.close()
    assert out.getvalue().splitlines() == [format_metrics(s, VALUES) for s in (1, 2, 3)]
    assert all(parse_metrics(line) for line in out.getvalue().splitlines())
    assert "\r" not in out.getvalue()


def test_terminal_shows_step_loss_tokens_per_second_and_eta():
    # guards: on a TTY a person sees step of max_steps, loss, tokens/s and the remaining time,
    # and no metric lines
    out = Terminal()
    progress = Progress(out)
    progress.start(10)
    for step in (1, 2, 3):
        progress.step(step)
    progress.log(3, VALUES)
    progress.close()
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("train 3/10 |"), last
    assert "loss=1.2345" in last and "tok/s=512" in last
    elapsed_and_eta = last.rsplit("[", 1)[1]
    assert "<" in elapsed_and_eta and "?" not in elapsed_and_eta  # an ETA, not unknown
    assert "[codetune]" not in out.getvalue()


def test_resumed_run_starts_the_bar_part_way():
    # guards: resuming at step 6 of 10 shows 6/10, so the ETA covers only what is left
    out = Terminal()
    progress = Progress(out)
    progress.start(10, initial=6)
    progress.step(7)
    progress.close()
    assert out.getvalue().split("\r")[-1].startswith("train 7/10 |")
