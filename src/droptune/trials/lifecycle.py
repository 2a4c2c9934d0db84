"""One trial's lifecycle, the same for every runner: open its MLflow run, record its epochs,
finish it (drop its checkpoint, end the run with the trial's state) and tell the study.

A runner takes a list of `TrialSpec`s, trains them its own way, and hands each one's
`TrialOutcome` to `TrialLifecycle.finish` the moment that trial ends.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from droptune.build import site_params
from droptune.config.types import OWN_FAMILIES
from droptune.inputs import Data, Split
from droptune.tracking import StudyTracking

if TYPE_CHECKING:  # the study package imports the runners, which import this module
    from droptune.study.objectives import Objectives
    from droptune.study.progress import StudyProgress


@dataclass
class TrialSpec:
    """A trial asked from the study and the full config its sampled overrides produce."""

    trial: optuna.Trial
    config: dict[str, Any]
    checkpoint: Path | None = None  # shared by a trial and its retries, removed when it ends


@dataclass
class TrialOutcome:
    state: TrialState
    value: float | list[float] | None = None  # a list: one per objective
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def diverged(metrics: Mapping[str, float], epoch: int) -> str | None:
    """Why an epoch's losses end a trial (NaN or infinite), or None."""
    losses = [k for k in metrics if k.endswith("loss")]  # a user's module names its own
    bad = next((k for k in losses if not math.isfinite(metrics[k])), None)
    return None if bad is None else f"{bad} is {metrics[bad]} at epoch {epoch}"


@dataclass
class TrialLifecycle:
    """Opens, records and finishes the trials of one study in MLflow and in the study."""

    tracking: StudyTracking
    study_name: str
    progress: StudyProgress | None = None  # what `make tune` shows while it runs

    def open(self, spec: TrialSpec, arrays: Data) -> str:
        """The trial's MLflow child run; its id is kept on the trial."""
        trial = spec.trial
        try:
            model = spec.config["model"]
            sites = site_params(model, arrays.input_shape, len(arrays.classes))
        except Exception:  # a config this trial cannot build: the fit fails it, saying why
            sites = {}
        run_id = self.tracking.start_trial(
            trial.number, trial.params, spec.config, self.study_name, sites
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        if self.progress is not None:
            self.progress.started(trial.number, spec.config["trainer"]["max_epochs"])
        return run_id

    def record(self, run_id: str, epochs: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Epochs' metrics, (epoch, metrics) pairs, in one write."""
        if epochs:
            self.tracking.tracker.log_history(run_id, epochs)

    def epoch_ended(self, epoch: int) -> None:
        """An epoch of what the runner trains now ended (all of a fused group's members)."""
        if self.progress is not None:
            self.progress.epoch(epoch)

    def finish(
        self,
        spec: TrialSpec,
        run_id: str,
        outcome: TrialOutcome,
        summary: Mapping[str, float] | None = None,
        epochs: int = 0,
    ) -> None:
        """The trial's end: its checkpoint folder goes, its run ends with the trial's state (and
        `summary` at step `epochs`), and the study is told, in that order."""
        if spec.checkpoint is not None:
            shutil.rmtree(spec.checkpoint.parent, ignore_errors=True)
        state = outcome.state.name
        self.tracking.finish_trial(run_id, state, outcome.reason, summary or {}, epochs)
        tell(spec.trial, spec.config, outcome)
        if self.progress is not None:
            self.progress.finished(spec.trial.number, outcome.state, outcome.value)


@dataclass
class TrialContext:
    """What every trial of one study trains on and reports to; each runner reads it."""

    arrays: Data
    folds: Sequence[Split]
    objectives: Objectives
    lifecycle: TrialLifecycle
    data_cache: dict = field(default_factory=dict)  # prepared device tensors, shared by trials


def tell(trial: optuna.Trial, config: Mapping[str, Any], outcome: TrialOutcome) -> None:
    """The trial's end in the study the moment it ends (after its MLflow run's), not after its
    batch: a worker killed later in the batch loses no trial that finished."""
    describe_trial(trial, config, outcome)
    if outcome.state == TrialState.COMPLETE:
        trial.study.tell(trial, outcome.value)
        return
    if outcome.state == TrialState.FAIL:
        trial.set_user_attr("fail_reason", outcome.reason)
    trial.study.tell(trial, state=outcome.state)


def describe_trial(trial: optuna.Trial, config: Mapping[str, Any], outcome: TrialOutcome) -> None:
    """User attrs the study plots read: effective hidden rate, placement (of droptune's own
    models; a user's has sites instead), final gap."""
    dropout = config["model"]["dropout"]
    if config["model"]["family"] in OWN_FAMILIES:
        hidden = dropout["hidden"]
        rates = hidden if isinstance(hidden, list) else [hidden]
        trial.set_user_attr("dropout_hidden", float(np.mean(rates)))
        trial.set_user_attr("dropout_placement", dropout["placement"])
    if "gap/acc" in outcome.metrics:
        trial.set_user_attr("gap_acc", outcome.metrics["gap/acc"])
    test = outcome.metrics.get("test/acc", outcome.metrics.get("test/acc_mean"))
    if test is not None:  # the trial's own model on the test set: what a selected config gives
        trial.set_user_attr("test_acc", test)
