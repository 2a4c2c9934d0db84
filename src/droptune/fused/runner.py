"""The fused runner: groups the trials it is given, trains each group in one fit, and ends each
member's trial through the shared lifecycle the moment it leaves its group."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from optuna.trial import TrialState

from droptune.fit import cv_metrics, fold_mean
from droptune.fused import RunnerChoice
from droptune.fused import fit as fused_fit
from droptune.fused.checkpoint import MemberCheckpoint
from droptune.fused.fit import GroupOptions
from droptune.fused.grouping import (
    Member,
    group_key,
    member_checkpoint_path,
    member_seed,
    unfused_reason,
)
from droptune.trials.lifecycle import TrialContext, TrialOutcome, TrialSpec, diverged
from droptune.trials.pruning import CV_FOLD_METRIC, PruningView
from droptune.trials.standard import StandardRunner

log = logging.getLogger("droptune")

# members' curves reach MLflow at least this often and when their trial ends: one write per run
# for several epochs (a write of one epoch cost 4.4 ms, of 15 epochs 0.75 ms per epoch, SQLite)
METRICS_EVERY_S = 10.0


@dataclass
class TrialRecord:
    """What the runner tracks for a trial while its group trains: its members (one, or one per
    fold) and its latest epoch, fold-mean for a k-fold trial as the standard runner logs it."""

    run_id: str
    members: list[int]  # positions in the group
    last: dict[str, float] | None = None
    last_folds: list[dict[str, float]] = field(default_factory=list)
    outcome: TrialOutcome | None = None
    unlogged: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (epoch, metrics)

    def cv(self) -> dict[str, float]:
        """A k-fold trial's cv/* summary, as the standard runner ends its run with; {} for one
        split (or before its first epoch)."""
        if len(self.last_folds) < 2:
            return {}
        tests = [{k: v for k, v in f.items() if k.startswith("test/")} for f in self.last_folds]
        return cv_metrics(self.last_folds, tests)

    @property
    def metrics(self) -> dict[str, float]:
        """Its latest epoch, with the cv/* summary of a k-fold trial."""
        return {**(self.last or {}), **self.cv()}


class GroupRun:
    """One group's trials from their runs' start to their tells: `report` is the fit's epoch
    callback, deciding which members stay (a trial's folds stay or leave together); `finish`
    ends one trial."""

    def __init__(self, context: TrialContext, specs: Sequence[TrialSpec], members: list[Member]):
        self.context, self.specs, self.members = context, list(specs), members
        self.trials = [
            TrialRecord(
                context.lifecycle.open(spec, context.arrays),
                [j for j, m in enumerate(members) if m.index == i],
            )
            for i, spec in enumerate(specs)
        ]
        self.alive = list(range(len(members)))  # the members still training, in the group's order
        self._logged_at = time.monotonic()
        for spec, trial in zip(self.specs, self.trials, strict=True):
            spec.trial.set_user_attr("fused_group_size", len(specs))
            first = members[trial.members[0]]
            if first.resume:  # the retried trial's first epochs: its run's curves start at 0
                spec.trial.set_user_attr("resumed_from_epoch", first.start_epoch)
                histories = [members[j].resume.history for j in trial.members]
                context.lifecycle.record(
                    trial.run_id, list(enumerate(map(fold_mean, zip(*histories, strict=True))))
                )

    def flush(self, trials: Iterable[int]) -> None:
        """Trials' epochs not yet written, one write per trial."""
        for t in trials:
            self.context.lifecycle.record(self.trials[t].run_id, self.trials[t].unlogged)
            self.trials[t].unlogged = []
        self._logged_at = time.monotonic()

    def finish(self, t: int, outcome: TrialOutcome) -> None:
        self.flush([t])
        trial = self.trials[t]
        trial.outcome = outcome
        # a k-fold trial's run ends with its cv/* summary, as on the standard runner
        self.context.lifecycle.finish(self.specs[t], trial.run_id, outcome, trial.cv())

    def alive_trials(self) -> list[int]:
        return sorted({self.members[i].index for i in self.alive})

    def report(self, epoch: int, metrics: list[dict[str, float]]) -> list[bool]:
        by_member = dict(zip(self.alive, metrics, strict=True))
        reported = []
        objectives = self.context.objectives
        fold_metric = CV_FOLD_METRIC.get(objectives.metric, objectives.metric)
        for t in self.alive_trials():
            trial = self.trials[t]
            trial.last_folds = [by_member[j] for j in trial.members]
            trial.last = fold_mean(trial.last_folds)
            trial.unlogged.append((epoch, trial.last))
            failure = diverged(trial.last, epoch)
            if failure:
                self.finish(t, TrialOutcome(TrialState.FAIL, reason=failure, metrics=trial.metrics))
            elif not objectives.multi:  # Optuna prunes single objectives only
                self.specs[t].trial.report(trial.last[fold_metric], epoch)
                reported.append(t)
        if reported:  # every trial's value is in before any decision: all see the same epoch
            view = PruningView(self.specs[reported[0]].trial.study)
            for t in reported:
                if view.should_prune(self.specs[t].trial):
                    metrics = self.trials[t].metrics
                    self.finish(t, TrialOutcome(TrialState.PRUNED, metrics=metrics))
        keep = [self.trials[self.members[i].index].outcome is None for i in self.alive]
        self.alive = [i for i, k in zip(self.alive, keep, strict=True) if k]
        if time.monotonic() - self._logged_at >= METRICS_EVERY_S:
            self.flush(self.alive_trials())
        self.context.lifecycle.epoch_ended(epoch)
        return keep

    def fail_alive(self, error: Exception) -> None:
        """OOM or any other error fails this group's open trials only."""
        log.warning("fused group of %d failed", len(self.specs), exc_info=True)
        reason = f"{type(error).__name__}: {error}"
        for t in self.alive_trials():
            self.finish(t, TrialOutcome(TrialState.FAIL, reason=reason))
        self.alive = []

    def complete_survivors(self) -> list[TrialOutcome]:
        for t in self.alive_trials():
            trial = self.trials[t]
            if trial.outcome is None:
                value = self.context.objectives.value(trial.metrics)
                self.finish(t, TrialOutcome(TrialState.COMPLETE, value, metrics=trial.metrics))
        return [trial.outcome for trial in self.trials]


class FusedRunner:
    """Trains up to `capacity` trials at once, in groups of what can share one fit; a k-fold
    trial is one member per fold.

    Trials that cannot be fused (a CNN, rates set by site glob, the alpha, dropconnect or
    concrete variant, an invalid config) go to the standard runner, each reason said once.
    """

    def __init__(
        self,
        context: TrialContext,
        capacity: int,
        options: GroupOptions,
        choice: RunnerChoice,
    ) -> None:
        """`choice`: what study.runner resolved to; under auto on a CPU, trials whose step is
        too large for stacking to pay train on the standard runner (fused.choose_runner)."""
        self.context, self.capacity, self.options = context, capacity, options
        self.choice = choice
        self.standard = StandardRunner(context)
        self._said: set[str] = set()

    def _unfused_reason(self, config: dict) -> str | None:
        reason = unfused_reason(config, self.context.folds)
        if reason is None and not self.choice.stacks(config, self.context.arrays):
            return f"steps above {self.choice.max_macs:,} multiply-accumulates"
        return reason

    def run(self, specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
        outcomes: list[TrialOutcome | None] = [None] * len(specs)
        groups: dict[tuple, list[int]] = {}
        saved: dict[int, list[MemberCheckpoint | None]] = {}
        for i, spec in enumerate(specs):
            reason = self._unfused_reason(spec.config)
            if reason is None:
                saved[i] = self._saved(spec)
                start = saved[i][0].epoch if saved[i][0] else 0  # resumed members train together
                groups.setdefault((*group_key(spec.config), start), []).append(i)
                continue
            if reason not in self._said:
                self._said.add(reason)
                log.info("trials with %s run on the standard runner", reason)
            (outcomes[i],) = self.standard.run([spec])
        for indices in groups.values():
            group = [specs[i] for i in indices]
            results = self._run_group(group, [saved[i] for i in indices])
            for i, outcome in zip(indices, results, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _folds(self) -> list[int | None]:
        """A member per fold of a k-fold trial, one (no fold) otherwise."""
        n = len(self.context.folds)
        return list(range(n)) if n > 1 else [None]

    def _saved(self, spec: TrialSpec) -> list[MemberCheckpoint | None]:
        """A retried trial's saved members, one per fold; none unless every fold saved the same
        epoch (a kill between two folds' saves: the trial starts again from epoch 0)."""
        saved = [
            MemberCheckpoint.load(member_checkpoint_path(spec.checkpoint, fold))
            for fold in self._folds()
        ]
        if len({s.epoch if s else None for s in saved}) == 1:
            return saved
        log.info("trial %d: its folds' checkpoints differ; it starts at epoch 0", spec.trial.number)
        return [None] * len(saved)

    def _run_group(
        self, specs: Sequence[TrialSpec], saved: Sequence[list[MemberCheckpoint | None]]
    ) -> list[TrialOutcome]:
        """`saved`: each trial's members' checkpoints (a retried trial) or Nones; all resume at
        one epoch."""
        seed = specs[0].config["seed"]
        members = [
            Member(
                index=i,
                config=spec.config,
                seed=member_seed(seed, spec.trial.number),  # a trial's folds: one seed, as alone
                checkpoint=member_checkpoint_path(spec.checkpoint, fold),
                resume=state,
                split=fold or 0,
            )
            for i, (spec, states) in enumerate(zip(specs, saved, strict=True))
            for fold, state in zip(self._folds(), states, strict=True)
        ]
        run = GroupRun(self.context, specs, members)
        try:
            fused_fit.train_group(
                self.context.arrays,
                self.context.folds,
                members,
                run.report,
                self.options,
                data_cache=self.context.data_cache,
            )
        except Exception as error:
            if isinstance(error, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            run.fail_alive(error)
        finally:
            run.flush(run.alive_trials())  # what was measured is kept, whatever ended the fit
        return run.complete_survivors()
