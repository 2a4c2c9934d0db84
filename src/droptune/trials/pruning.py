"""Reporting a trial's epochs to the study: the standard runner's callback, and the view of the
study a group of fused trials is pruned against."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import optuna
from optuna.trial import TrialState

from droptune.errors import ConfigError
from droptune.fit import FitResult
from droptune.logged import history_source
from droptune.optuna_internals import storage_of, trial_id_of
from droptune.trials.lifecycle import diverged

if TYPE_CHECKING:  # the study package imports the runners
    from droptune.study.objectives import Objectives

# the pruners that write on a trial they decide (its rung's value)
WRITING_PRUNERS = (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner)
CV_FOLD_METRIC = {"cv/acc_mean": "val/acc", "cv/acc_best_mean": "val/acc_best"}


class TrialReporter(L.Callback):
    """Reports the study metric to the trial (every epoch, or every fold under CV), prunes, and
    stops a trial whose loss is NaN or infinite. A multi-objective study reports nothing (Optuna
    prunes single objectives only): its trials run to their last epoch."""

    def __init__(self, trial: optuna.Trial, objectives: Objectives) -> None:
        self.trial, self.objectives = trial, objectives
        self.metric = objectives.metric
        self.pruned = False
        self.failure: str | None = None
        self.unlogged_metric: ConfigError | None = None  # the study cannot go on: stop it

    def report(self, value: float, step: int) -> bool:
        """Report one step's value; True when the pruner says stop."""
        if self.objectives.multi:
            return False
        self.trial.report(value, step)
        self.pruned = self.trial.should_prune()
        return self.pruned

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = history_source(trainer, pl_module).history[-1]
        epoch = trainer.current_epoch
        self.failure = diverged(metrics, epoch) or self.check_logged(metrics, pl_module)
        if self.failure or self.metric in metrics and self.report(metrics[self.metric], epoch):
            trainer.should_stop = True

    def check_logged(self, metrics: Mapping[str, float], module: L.LightningModule) -> str | None:
        """A module that does not log a metric the study optimises fails its trial, and the study
        stops (every trial would fail alike), with one line saying what it logged instead."""
        needed = self.objectives.metrics
        missing = [m for m in needed if m not in metrics and m not in CV_FOLD_METRIC]
        if not missing:
            return None
        metric = missing[0]
        logs = "val/acc (its best is val/acc_best)" if metric == "val/acc_best" else metric
        key = "study.objectives" if self.objectives.multi else "study.metric"
        self.unlogged_metric = ConfigError(
            key,
            list(needed) if self.objectives.multi else metric,
            f"{'metrics' if self.objectives.multi else 'a metric'} {type(module).__name__} logs: it logged {sorted(metrics) or 'nothing'}, "
            f"not {logs} (self.log in its validation_step, or {key}=<of those>)",
        )
        return str(self.unlogged_metric)

    def after_fold(self, index: int, results: list[FitResult]) -> bool:
        if self.failure:
            return True
        fold_metric = CV_FOLD_METRIC[self.metric]
        running_mean = float(np.mean([r.history[-1][fold_metric] for r in results]))
        return self.report(running_mean, index)


class PruningView:
    """The study as a pruner sees it while a group of trials reports one epoch.

    Asking `Trial.should_prune` for each of K running trials reads the study K times, and each
    read reloads every unfinished trial from the storage: K^2 trial loads per epoch, the largest
    cost of a fused study's host time. Here the trials are read once per epoch; after each
    decision the decided trial alone is read again, so what the pruner wrote on it (successive
    halving's rung values) is seen by the trials decided after it, as in sequential calls; the
    pruners that write nothing (median, percentile, none) need no second read.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        # read-only here: the storage's own objects, not copies (in number order)
        self._trials = {t.number: t for t in study.get_trials(deepcopy=False)}

    def get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None
    ) -> list[optuna.trial.FrozenTrial]:
        trials = [t for t in self._trials.values() if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:  # everything else: the study itself
        return getattr(self._study, name)

    def should_prune(self, trial: optuna.Trial) -> bool:
        """Trial.should_prune's answer for a trial that reported before this view was made."""
        pruned = self._study.pruner.prune(self, self._trials[trial.number])
        if isinstance(self._study.pruner, WRITING_PRUNERS):
            self._trials[trial.number] = storage_of(self._study).get_trial(trial_id_of(trial))
        return pruned
