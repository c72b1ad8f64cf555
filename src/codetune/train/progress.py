"""Where the trainer's per-step metrics go: a progress bar for a person, lines for SageMaker.

On a terminal (stdout is a TTY) training shows one tqdm bar — step of max_steps, loss,
tokens/s and the ETA tqdm computes from the step rate. Anywhere else (a SageMaker job, a
pipe, a log file) each logging step prints the metric line of :func:`codetune.metrics.format_metrics`
that the jobs' ``MetricDefinitions`` parse; those lines never change with the terminal.
"""

from __future__ import annotations

import sys
from typing import TextIO

from codetune.metrics import format_metrics


class Progress:
    """Per-step metrics as a bar (``bar=True``) or as metric lines (default: bar on a TTY)."""

    def __init__(self, stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.use_bar = _isatty(self.stream) if bar is None else bar
        self._bar = None

    def start(self, total: int, initial: int = 0) -> None:
        """Open the bar at step ``initial`` of ``total`` (a resumed run starts part-way)."""
        if not self.use_bar:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            initial=initial,
            file=self.stream,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {postfix} [{elapsed}<{remaining}]",
        )

    def step(self, step: int) -> None:
        """The optimizer finished ``step`` (moves the bar; the ETA follows)."""
        if self._bar is not None and step > self._bar.n:
            self._bar.update(step - self._bar.n)

    def log(self, step: int, values: dict[str, float]) -> None:
        """One logging step: the bar's loss and tokens/s, or the metric line."""
        if self._bar is None:
            print(format_metrics(step, values), file=self.stream, flush=True)
            return
        self.step(step)
        postfix = {}
        if values.get("loss") is not None:
            postfix["loss"] = f"{values['loss']:.4f}"
        if values.get("tokens_per_second") is not None:
            postfix["tok/s"] = f"{values['tokens_per_second']:.0f}"
        self._bar.set_postfix(postfix, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
