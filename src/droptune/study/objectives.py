"""What a study optimises: one metric and its direction, or several (`study.objectives`), whose
answer is a Pareto front rather than one best trial. Every part that reads or writes a trial's
value asks this, so a single- and a multi-objective study differ in one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from droptune.config.whole import default_metric, objective_directions
from droptune.optuna_internals import pareto_front


@dataclass(frozen=True)
class Objectives:
    metrics: tuple[str, ...]
    directions: tuple[str, ...]  # "maximize" | "minimize", one per metric

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def metric(self) -> str:
        """The first objective: a single-objective study's metric, what the runners check is
        logged, and what a multi-objective study's history and importance plots are drawn for."""
        return self.metrics[0]

    def value(self, metrics: Mapping[str, float]) -> float | list[float]:
        """What the study is told of a complete trial."""
        values = [float(metrics[m]) for m in self.metrics]
        return values if self.multi else values[0]

    def describe(self, trial: FrozenTrial) -> str:
        """A trial's values by name: `val/acc 0.9012  val/ece 0.0213`."""
        values = trial.values or []
        return "  ".join(f"{m} {v:.4f}" for m, v in zip(self.metrics, values, strict=False))

    def best(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The best complete trial (a list of one), or the Pareto front (by number); [] if
        none is complete."""
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if self.multi:
            front = pareto_front(complete, [_direction(d) for d in self.directions])
            return sorted(front, key=lambda t: t.number)
        pick = max if self.directions[0] == "maximize" else min
        return [pick(complete, key=lambda t: t.value)] if complete else []


def _direction(name: str) -> StudyDirection:
    return StudyDirection.MAXIMIZE if name == "maximize" else StudyDirection.MINIMIZE


def objectives_of(cfg: Mapping[str, Any]) -> Objectives:
    """A (validated) tune config's objectives: study.objectives, or study.metric (its default:
    val/acc_best, or the CV mean with data.cv_folds) with study.direction."""
    s = cfg["study"]
    if s["objectives"]:
        named = objective_directions(s["objectives"])
        return Objectives(tuple(named), tuple(named.values()))
    metric = default_metric(s["metric"], bool(cfg["data"]["cv_folds"]))
    return Objectives((metric,), (s["direction"],))


def objectives_of_study(study: optuna.Study) -> Objectives:
    """A stored study's objectives, as its creator recorded them (plots and the report read a
    study without its tune config)."""
    parts = study.user_attrs.get("fingerprint_parts", {})
    directions = tuple(d.name.lower() for d in study.directions)
    metrics = parts.get("study.objectives") or [parts.get("study.metric", "objective")]
    return Objectives(tuple(metrics), directions)
