"""What `make tune` shows while a study runs: trials finished of the budget, running, pruned,
failed, the best so far, elapsed and an estimate of the time left, and the epoch of what this
worker trains now (a fused group's epoch and its live members).

On a terminal it is one live line (rich) under the log's trial lines; elsewhere (SLURM, a pipe)
a plain log line at most every `interval` seconds, written when an epoch or a trial ends.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from droptune.study.budget import best_of_values, budget_of, count_failed
from droptune.study.objectives import Objectives

log = logging.getLogger("droptune")


@dataclass
class Counts:
    """The study as last read, plus what this worker told since."""

    used: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best: tuple[float, int] | None = None  # (value, trial number)
    front: int = 0  # trials on a multi-objective study's Pareto front


@dataclass
class Training:
    """What this worker trains now."""

    started: dict[int, float] = field(default_factory=dict)  # trial number -> monotonic start
    epoch: int = 0
    max_epochs: int = 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class StudyProgress:
    """Fed by the trial lifecycle (started, epoch, finished) and by each read of the study."""

    def __init__(self, *, budget: int, objectives: Objectives, interval: float, live: bool) -> None:
        self.budget, self.objectives, self.interval = budget, objectives, interval
        self.maximize = objectives.directions[0] == "maximize"
        self.counts, self.training = Counts(), Training()
        self.began = time.monotonic()
        self.durations: list[float] = []  # seconds of each trial this worker finished
        self.capacity = 1  # trials trained at once (a fused group's size)
        self._printed_at = self.began
        self._live = _LiveLine(self.line) if live else None

    # --- events -------------------------------------------------------------------------------

    def sync(self, trials: Sequence[FrozenTrial]) -> None:
        """Counts from a read of the study (other workers' trials included)."""
        best = self.objectives.best(trials)
        multi = self.objectives.multi
        self.counts = Counts(
            used=budget_of(trials),
            complete=sum(t.state == TrialState.COMPLETE for t in trials),
            pruned=sum(t.state == TrialState.PRUNED for t in trials),
            failed=count_failed(trials),
            running=sum(t.state == TrialState.RUNNING for t in trials),
            best=None if multi or not best else (best[0].value, best[0].number),
            front=len(best) if multi else 0,
        )

    def started(self, number: int, max_epochs: int) -> None:
        self.training.started[number] = time.monotonic()
        self.counts.running += 1
        self.training.epoch, self.training.max_epochs = 0, max_epochs
        self.capacity = max(self.capacity, len(self.training.started))

    def epoch(self, epoch: int) -> None:
        self.training.epoch = epoch + 1
        self._maybe_print()

    def finished(self, number: int, state: TrialState, value: float | list[float] | None) -> None:
        """A trial this worker ran ended (a multi-objective study's front is counted at the
        next read of the study)."""
        start = self.training.started.pop(number, None)
        if start is not None:
            self.durations.append(time.monotonic() - start)
        c = self.counts
        c.running = max(c.running - 1, 0)
        if state == TrialState.COMPLETE:
            c.complete += 1
            if not self.objectives.multi:
                scored = [(value, number), *([c.best] if c.best else [])]
                c.best = best_of_values(scored, self.maximize)
        elif state == TrialState.PRUNED:
            c.pruned += 1
        elif state == TrialState.FAIL:
            c.failed += 1
        self._maybe_print()

    # --- what is shown ------------------------------------------------------------------------

    def line(self) -> str:
        c, t = self.counts, self.training
        done = c.complete + c.pruned + c.failed
        parts = [
            f"{done}/{self.budget} trials ({c.complete} complete, {c.pruned} pruned, "
            f"{c.failed} failed), {c.running} running",
            f"Pareto front {c.front} trial(s)"
            if self.objectives.multi
            else f"best {c.best[0]:.4f} (#{c.best[1]})"
            if c.best
            else "best -",
        ]
        if t.started:
            numbers = sorted(t.started)
            who = (
                f"trial {numbers[0]}"
                if len(numbers) == 1
                else f"group of {self.capacity}, {len(numbers)} live"
            )
            parts.append(f"{who} epoch {t.epoch}/{t.max_epochs}")
        elapsed = time.monotonic() - self.began
        left = self.time_left(done)
        parts.append(
            f"{_duration(elapsed)} elapsed" + (f", ~{_duration(left)} left" if left else "")
        )
        return " · ".join(parts)

    def time_left(self, done: int) -> float | None:
        """Trials left times this worker's mean trial time, per trial it trains at once; before
        its first trial ends, the running trial's pace over its epochs stands in."""
        remaining = self.budget - done
        if remaining <= 0:
            return None
        if self.durations:
            per_trial = sum(self.durations) / len(self.durations)
        elif self.training.started and self.training.epoch:
            spent = time.monotonic() - min(self.training.started.values())
            per_trial = spent * self.training.max_epochs / self.training.epoch
        else:
            return None
        return remaining * per_trial / self.capacity

    def _maybe_print(self) -> None:
        if self._live is not None:
            self._live.refresh()
            return
        now = time.monotonic()
        if now - self._printed_at >= self.interval:
            self._printed_at = now
            log.info("progress: %s", self.line())

    def __enter__(self) -> StudyProgress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()


class _LiveLine:
    """rich's Live display of one line, kept under the log: while it runs, the log's console
    handlers write to rich's stdout proxy, so their lines print above the live one (a handler
    keeps the stream it was made with, which would write through the display)."""

    def __init__(self, render) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self.live = Live(
            get_renderable=lambda: Text(render(), style="bold"),
            console=Console(file=sys.stdout),
            refresh_per_second=1,
            transient=True,
        )
        self._streams: list[tuple[logging.StreamHandler, object]] = []

    def start(self) -> None:
        handlers = _console_handlers()
        self.live.start()  # sys.stdout is now rich's proxy, which prints above the live line
        for handler in handlers:
            self._streams.append((handler, handler.setStream(sys.stdout)))

    def refresh(self) -> None:
        self.live.refresh()

    def stop(self) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)
        self.live.stop()


def _console_handlers() -> list[logging.StreamHandler]:
    """The handlers (Hydra's, a user's) that print to the terminal."""
    loggers = [logging.getLogger(), logging.getLogger("droptune")]
    return [
        h
        for logger in loggers
        for h in logger.handlers
        if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)
    ]
