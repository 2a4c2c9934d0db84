"""The study's total budget (what counts toward study.n_trials) and what a user reads of its
progress: a line per finished trial, study/* metrics, the summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

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


def best_of(study: optuna.Study, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: t.value) if complete else None


def finished_line(
    study: optuna.Study, trials: Sequence[FrozenTrial], trial: FrozenTrial, metric: str, budget: int
) -> str:
    """The log line of a finished trial; `trials`: the study as read once after its batch."""
    value = (
        f"{metric} {trial.value:.4f}"
        if trial.value is not None
        else trial.user_attrs.get("fail_reason", "")
    )
    best = best_of(study, trials)
    return (
        f"trial {trial.number:4d} {trial.state.name:8s} {value}  |  "
        f"best {f'{best.value:.4f} (#{best.number})' if best else '-'}  |  "
        f"{_count(trials, TrialState.COMPLETE)} complete, "
        f"{_count(trials, TrialState.PRUNED)} pruned, {count_failed(trials)} failed"
        f"  |  {budget_of(trials)}/{budget}"
    )


def log_progress(
    study: optuna.Study, trials: Sequence[FrozenTrial], tracking: StudyTracking, step: int
) -> None:
    """study/* metrics on the parent run: counts and the best value so far."""
    progress = {
        "study/n_complete": _count(trials, TrialState.COMPLETE),
        "study/n_pruned": _count(trials, TrialState.PRUNED),
        "study/n_failed": count_failed(trials),
    }
    best = best_of(study, trials)
    if best:
        progress["study/best_value"] = best.value
    tracking.log_study(progress, step)


def summary(study: optuna.Study, parent: str, tracking: StudyTracking) -> dict[str, Any]:
    """What `optimize` returns and writes as summary.json."""
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial if _count(trials, TrialState.COMPLETE) else None
    return {
        "study": study.study_name,
        "n_complete": _count(trials, TrialState.COMPLETE),
        "n_pruned": _count(trials, TrialState.PRUNED),
        "n_failed": count_failed(trials),
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "best_params": best.params if best else None,
        "best_overrides": best.user_attrs.get("overrides") if best else None,
        "best_test_acc": best.user_attrs.get("test_acc") if best else None,
        "mlflow_parent_run_id": parent,
        "mlflow_experiment_id": tracking.tracker.experiment_id,
        "fingerprint": study.user_attrs.get("fingerprint"),
    }
