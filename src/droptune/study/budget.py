"""The study's total budget (what counts toward study.n_trials) and what a user reads of its
progress: a line per finished trial, study/* metrics, the summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from droptune.study.objectives import Objectives
from droptune.tracking import StudyTracking


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished, running or queued trials count; a FAIL counts only if the trial itself failed
    (NaN, OOM, error), not when its worker died, was interrupted, or it was over budget."""
    if trial.state == TrialState.FAIL:
        return "fail_reason" in trial.user_attrs
    return True


def budget_of(trials: Sequence[FrozenTrial], before_number: int | None = None) -> int:
    return sum(
        counts_toward_budget(t) for t in trials if before_number is None or t.number < before_number
    )


def budget_used(study: optuna.Study, before_number: int | None = None) -> int:
    return budget_of(study.get_trials(deepcopy=False), before_number)


def count_failed(trials: Sequence[FrozenTrial]) -> int:
    return sum(t.state == TrialState.FAIL and counts_toward_budget(t) for t in trials)


def _count(trials: Sequence[FrozenTrial], state: TrialState) -> int:
    return sum(t.state == state for t in trials)


def best_of_values(scored: Sequence[tuple[float, int]], maximize: bool) -> tuple[float, int] | None:
    """The best (value, trial number) of some."""
    pick = max if maximize else min
    return pick(scored, key=lambda pair: pair[0]) if scored else None


def finished_lines(
    objectives: Objectives, trials: Sequence[FrozenTrial], numbers: Sequence[int], budget: int
) -> list[str]:
    """The log lines of a batch's finished trials (by number); `trials`: the study as read once
    after the batch, whose best trial or front is the same for every line."""
    best = objectives.best(trials)
    if objectives.multi:
        best_text = f"Pareto front {len(best)} trial(s)"
    else:
        best_text = f"best {best[0].value:.4f} (#{best[0].number})" if best else "best -"
    counts = (
        f"{_count(trials, TrialState.COMPLETE)} complete, "
        f"{_count(trials, TrialState.PRUNED)} pruned, {count_failed(trials)} failed"
        f"  |  {budget_of(trials)}/{budget}"
    )
    lines = []
    for trial in (trials[number] for number in numbers):
        value = (
            objectives.describe(trial)
            if trial.values is not None
            else trial.user_attrs.get("fail_reason", "")
        )
        lines.append(
            f"trial {trial.number:4d} {trial.state.name:8s} {value}  |  {best_text}  |  {counts}"
        )
    return lines


def log_progress(
    objectives: Objectives, trials: Sequence[FrozenTrial], tracking: StudyTracking, step: int
) -> None:
    """study/* metrics on the parent run: counts, and the best value so far (a multi-objective
    study: the size of its Pareto front)."""
    progress = {
        "study/n_complete": _count(trials, TrialState.COMPLETE),
        "study/n_pruned": _count(trials, TrialState.PRUNED),
        "study/n_failed": count_failed(trials),
    }
    best = objectives.best(trials)
    if objectives.multi:
        progress["study/pareto_front_size"] = len(best)
    elif best:
        progress["study/best_value"] = best[0].value
    tracking.log_study(progress, step)


def front_of(objectives: Objectives, trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """A multi-objective study's Pareto trials: values by metric, params and `make train` line."""
    return [
        {
            "trial": t.number,
            "values": dict(zip(objectives.metrics, t.values, strict=True)),
            "params": t.params,
            "overrides": t.user_attrs.get("overrides"),
            "test_acc": t.user_attrs.get("test_acc"),
        }
        for t in objectives.best(trials)
    ]


def summary(
    study: optuna.Study, objectives: Objectives, parent: str, tracking: StudyTracking
) -> dict[str, Any]:
    """What `optimize` returns and writes as summary.json: the best trial, or (several
    objectives) the Pareto front, `best_*` then left null."""
    trials = study.get_trials(deepcopy=False)
    best = None if objectives.multi else next(iter(objectives.best(trials)), None)
    return {
        "study": study.study_name,
        "objectives": dict(zip(objectives.metrics, objectives.directions, strict=True)),
        "n_complete": _count(trials, TrialState.COMPLETE),
        "n_pruned": _count(trials, TrialState.PRUNED),
        "n_failed": count_failed(trials),
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "best_params": best.params if best else None,
        "best_overrides": best.user_attrs.get("overrides") if best else None,
        "best_test_acc": best.user_attrs.get("test_acc") if best else None,
        "pareto_front": front_of(objectives, trials) if objectives.multi else None,
        "mlflow_parent_run_id": parent,
        "mlflow_experiment_id": tracking.tracker.experiment_id,
        "fingerprint": study.user_attrs.get("fingerprint"),
    }
