"""``ProgressBar``: a ``learn`` callback that shows how far the run is toward its budget.

Like Stable-Baselines3's ``learn(progress_bar=True)``: the fraction done of the limit nearest to being
reached (env steps, seconds or updates), the 100-episode training mean and the last greedy evaluation (an
``EvalCallback``'s ``eval_return_mean``). On a terminal one line redrawn in place; elsewhere (a log file, CI)
a plain line every ``interval`` seconds and at the end.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from kerasce.rl.callbacks import RLCallback

__all__ = ["ProgressBar"]


class ProgressBar(RLCallback):
    """Show the run's progress toward ``learn``'s budget.

    Args:
      width: characters of the bar.
      interval: seconds between two plain lines when the stream is not a terminal.
      stream: where to write (default ``sys.stdout``).

    Raises:
      ValueError: if ``width < 1`` or ``interval < 0``.
    """

    def __init__(self, width: int = 30, interval: float = 10.0, stream: TextIO | None = None):
        super().__init__()
        if int(width) < 1:
            raise ValueError(f"`width` must be >= 1. Received: width={width}")
        if not interval >= 0:
            raise ValueError(f"`interval` must be >= 0. Received: interval={interval}")
        self.width, self.interval, self.stream = int(width), float(interval), stream
        self.start = self.last_line = 0.0
        self.pending = ""  # the latest line not written yet (not a terminal)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()
        self.last_line, self.pending = -math.inf, ""

    def fraction(self) -> tuple[float, str]:
        """``(done in [0, 1], "done/limit unit")`` of the limit nearest to being reached (env steps, seconds,
        updates: whichever ends the run first)."""
        budget, elapsed = self.run_context().budget, time.perf_counter() - self.start
        state = self.run_context().state
        progress = [
            (min(done / limit, 1.0), f"{done:,.0f}/{limit:,.0f} {unit}")
            for key, done, unit in [
                ("total_timesteps", float(state.env_steps), "env steps"),
                ("max_seconds", elapsed, "s"),
                ("max_updates", float(state.updates), "updates"),
            ]
            if (limit := budget.get(key))
        ]
        return max(progress, key=lambda p: p[0], default=(0.0, f"{state.env_steps:,} env steps"))

    def line(self, logs: dict) -> str:
        """The progress line for the update whose ``logs`` are given."""
        done, counts = self.fraction()
        filled = round(done * self.width)
        bar = "=" * filled + "." * (self.width - filled)
        evaluation = f"  eval {logs['eval_return_mean']:.1f}" if "eval_return_mean" in logs else ""
        mean = logs.get("mean_return_100", math.nan)
        elapsed = time.perf_counter() - self.start
        return f"[{bar}] {100 * done:3.0f}%  {counts}  {elapsed:.1f} s  mean_return_100 {mean:.1f}{evaluation}"

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.run_context().collective.worker != 0:
            return  # one bar per run: the chief's
        stream = self.stream or sys.stdout
        self.pending, now = self.line(logs or {}), time.perf_counter()
        if stream.isatty():
            stream.write("\r" + self.pending + "\033[K")
        elif now - self.last_line >= self.interval:
            stream.write(self.pending + "\n")
            self.last_line, self.pending = now, ""
        stream.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.run_context().collective.worker != 0:
            return
        stream = self.stream or sys.stdout
        if stream.isatty():
            stream.write("\n")
        elif self.pending:  # the last update's line, if the interval held it back
            stream.write(self.pending + "\n")
        stream.flush()
