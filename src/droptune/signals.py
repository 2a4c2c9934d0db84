"""Stop signals: SIGTERM (SLURM preemption, time limit) and SIGINT (Ctrl-C) end a worker cleanly.

Each raises SystemExit, so the running trial is failed, queued again and its MLflow run closed,
instead of the process vanishing mid-write. Python only prints an exception raised while a
finaliser runs, so each signal is also recorded, and the next epoch start raises it again.
"""

from __future__ import annotations

import signal

# A signal handler can only leave what it saw in module state: this list is that state, read and
# written through the functions below only.
_received: list[int] = []


def record(signum: int) -> None:
    """Remember a stop signal (the handler does this before raising)."""
    _received.append(signum)


def forget() -> None:
    """Clear what was recorded (a test that recorded one by hand)."""
    _received.clear()


def raise_if_received() -> None:
    """Stop at an epoch start if a stop signal came but its exception was lost."""
    if _received:
        raise SystemExit(128 + _received[0])


def exit_on_signals() -> None:
    """From now on SIGTERM and SIGINT record themselves and raise SystemExit."""

    def _exit(signum: int, frame: object) -> None:
        record(signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
