"""The fused runner: groups the trials it is given, trains each group in one fit, and ends each
member's trial through the shared lifecycle the moment it leaves its group."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from optuna.trial import TrialState

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
from droptune.trials.pruning import PruningView
from droptune.trials.standard import StandardRunner

log = logging.getLogger("droptune")

# members' curves reach MLflow at least this often and when their trial ends: one write per run
# for several epochs (a write of one epoch cost 4.4 ms, of 15 epochs 0.75 ms per epoch, SQLite)
METRICS_EVERY_S = 10.0


@dataclass
class MemberState:
    """What the runner tracks for a member while its group trains."""

    run_id: str
    last: dict[str, float] | None = None  # the latest epoch's metrics
    outcome: TrialOutcome | None = None
    unlogged: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (epoch, metrics)


class GroupRun:
    """One group's trials from their runs' start to their tells: `report` is the fit's epoch
    callback, deciding which members stay; `finish` ends one member's trial."""

    def __init__(self, context: TrialContext, specs: Sequence[TrialSpec], members: list[Member]):
        self.context, self.specs, self.members = context, list(specs), members
        self.states = [MemberState(context.lifecycle.open(s, context.arrays)) for s in specs]
        self.alive = list(range(len(specs)))  # the members still training, in the group's order
        self._logged_at = time.monotonic()
        for spec, member, state in zip(self.specs, members, self.states, strict=True):
            spec.trial.set_user_attr("fused_group_size", len(specs))
            if member.resume:  # the retried trial's first epochs: its run's curves start at 0
                spec.trial.set_user_attr("resumed_from_epoch", member.start_epoch)
                context.lifecycle.record(state.run_id, list(enumerate(member.resume.history)))

    def flush(self, indices: Iterable[int]) -> None:
        """Members' epochs not yet written, one write per member."""
        for i in indices:
            self.context.lifecycle.record(self.states[i].run_id, self.states[i].unlogged)
            self.states[i].unlogged = []
        self._logged_at = time.monotonic()

    def finish(self, i: int, outcome: TrialOutcome) -> None:
        self.flush([i])
        self.states[i].outcome = outcome
        self.context.lifecycle.finish(self.specs[i], self.states[i].run_id, outcome)

    def report(self, epoch: int, metrics: list[dict[str, float]]) -> list[bool]:
        reported = []
        for i, m in zip(self.alive, metrics, strict=True):
            self.states[i].last = m
            self.states[i].unlogged.append((epoch, m))
            failure = diverged(m, epoch)
            if failure:
                self.finish(i, TrialOutcome(TrialState.FAIL, reason=failure, metrics=m))
            elif not self.context.objectives.multi:  # Optuna prunes single objectives only
                self.specs[i].trial.report(m[self.context.objectives.metric], epoch)
                reported.append(i)
        if reported:  # every member's value is in before any decision: all see the same epoch
            view = PruningView(self.specs[reported[0]].trial.study)
            for i in reported:
                if view.should_prune(self.specs[i].trial):
                    last = self.states[i].last
                    self.finish(i, TrialOutcome(TrialState.PRUNED, metrics=last))
        keep = [self.states[i].outcome is None for i in self.alive]
        self.alive = [i for i, k in zip(self.alive, keep, strict=True) if k]
        if time.monotonic() - self._logged_at >= METRICS_EVERY_S:
            self.flush(self.alive)
        self.context.lifecycle.epoch_ended(epoch)
        return keep

    def fail_alive(self, error: Exception) -> None:
        """OOM or any other error fails this group's open trials only."""
        log.warning("fused group of %d failed", len(self.specs), exc_info=True)
        reason = f"{type(error).__name__}: {error}"
        for i in self.alive:
            self.finish(i, TrialOutcome(TrialState.FAIL, reason=reason))

    def complete_survivors(self) -> list[TrialOutcome]:
        for i in self.alive:
            if self.states[i].outcome is None:
                last = self.states[i].last
                value = self.context.objectives.value(last)
                self.finish(i, TrialOutcome(TrialState.COMPLETE, value, metrics=last))
        return [state.outcome for state in self.states]


class FusedRunner:
    """Trains up to `capacity` trials at once, in groups of what can share one fit.

    Trials that cannot be fused (a CNN, a CV objective, the alpha, dropconnect or concrete
    variant, an invalid config) go to the standard runner, each reason said once in the log.
    """

    def __init__(self, context: TrialContext, capacity: int, options: GroupOptions) -> None:
        self.context, self.capacity, self.options = context, capacity, options
        self.standard = StandardRunner(context)
        self._said: set[str] = set()

    def run(self, specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
        outcomes: list[TrialOutcome | None] = [None] * len(specs)
        groups: dict[tuple, list[int]] = {}
        saved: dict[int, MemberCheckpoint | None] = {}
        for i, spec in enumerate(specs):
            reason = unfused_reason(spec.config, len(self.context.folds))
            if reason is None:
                saved[i] = MemberCheckpoint.load(member_checkpoint_path(spec.checkpoint))
                start = saved[i].epoch if saved[i] else 0  # resumed members train together
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

    def _run_group(
        self, specs: Sequence[TrialSpec], saved: Sequence[MemberCheckpoint | None]
    ) -> list[TrialOutcome]:
        """`saved`: each member's checkpoint (a retried trial) or None; all resume at one epoch."""
        seed = specs[0].config["seed"]
        members = [
            Member(
                index=i,
                config=spec.config,
                seed=member_seed(seed, spec.trial.number),
                checkpoint=member_checkpoint_path(spec.checkpoint),
                resume=state,
            )
            for i, (spec, state) in enumerate(zip(specs, saved, strict=True))
        ]
        run = GroupRun(self.context, specs, members)
        ((train_index, val_index),) = self.context.folds
        try:
            fused_fit.train_group(
                self.context.arrays,
                train_index,
                val_index,
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
            run.flush(run.alive)  # what was measured is kept, whatever ended the fit
        return run.complete_survivors()
