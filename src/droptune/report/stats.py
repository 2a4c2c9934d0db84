"""Means over seeds with Student-t intervals, and paired differences between configs.

Retrains of two configs with the same seed share their data order (and, for networks of one
shape, their initial weights), so their difference is far less noisy than either score: the
interval of the per-seed differences, not the difference of two intervals, says what a config
bought over another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval over n values."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def points(self) -> str:
        """As percentage points with a sign: '+1.9 points [+1.4, +2.4]'."""
        return f"{100 * self.mean:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def percent(self) -> str:
        """As a percentage: '88.2% [87.9, 88.5]'."""
        return f"{100 * self.mean:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of `values` and its Student-t interval (needs two values or more)."""
    array = np.asarray(values, dtype=float)
    if array.size < 2:
        raise ValueError(f"an interval needs at least 2 values, got {array.size}")
    mean = float(array.mean())
    sem = float(stats.sem(array))
    if sem == 0.0:  # every seed scored the same: the interval is the point
        return Interval(mean, mean, mean, int(array.size), confidence)
    low, high = stats.t.interval(confidence, df=array.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), int(array.size), confidence)


def paired_difference(
    values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> Interval:
    """The mean of values[i] - baseline[i] (seed i of each) and its Student-t interval."""
    if len(values) != len(baseline):
        raise ValueError(f"paired values need one per seed each: {len(values)} vs {len(baseline)}")
    differences = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    return t_interval(differences, confidence)
