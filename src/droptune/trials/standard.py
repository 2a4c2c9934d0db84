"""The standard runner: trains the trials it is given one after another, each in its own fit."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

import torch
from optuna.trial import TrialState

from droptune.config import validate
from droptune.fit import Fitted, fit_folds
from droptune.trials.lifecycle import TrialContext, TrialOutcome, TrialSpec
from droptune.trials.pruning import TrialReporter

log = logging.getLogger("droptune")


class StandardRunner:
    """Takes a list and returns a list, so a runner that trains K trials in one fit is a drop-in."""

    capacity = 1

    def __init__(self, context: TrialContext) -> None:
        self.context = context

    def run(self, specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
        # each trial ends with a full collection (a finished fit's cycles hold its tensors);
        # frozen, what lives now (libraries, study, data: 600k objects) is not scanned by it,
        # which takes it from about 0.4 s a trial on a 2-core CPU to a few ms
        gc.freeze()
        try:
            return [self._run_one(spec) for spec in specs]
        finally:
            gc.unfreeze()

    def _run_one(self, spec: TrialSpec) -> TrialOutcome:
        context, lifecycle = self.context, self.context.lifecycle
        run_id = lifecycle.open(spec, context.arrays)
        reporter = TrialReporter(spec.trial, context.objectives)
        epochs, curve_keys = 0, set()
        try:
            config = validate(spec.config)
            fitted = fit_folds(
                config,
                context.arrays,
                context.folds,
                sinks=[
                    lambda m, e: lifecycle.record(run_id, [(e, m)]),
                    lambda m, e: lifecycle.epoch_ended(e),
                ],
                callbacks=[reporter],
                after_fold=reporter.after_fold if len(context.folds) > 1 else None,
                evaluate_test=config["evaluate_test"] and context.arrays.has_test,
                checkpoint=spec.checkpoint,
                data_cache=context.data_cache,
            )
            self._record_replayed(spec, run_id, fitted)
            epochs = len(fitted.folds[0].history)
            curve_keys = set((fitted.curves or fitted.folds[0].history)[-1])
            outcome = self._outcome(reporter, fitted.metrics)
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            outcome = TrialOutcome(TrialState.FAIL, reason=f"CUDA out of memory: {error}")
        except Exception as error:  # one trial's failure must not end the study
            log.warning("trial %d failed", spec.trial.number, exc_info=True)
            outcome = TrialOutcome(TrialState.FAIL, reason=f"{type(error).__name__}: {error}")
        finally:
            gc.collect()
        summary = {k: v for k, v in outcome.metrics.items() if k not in curve_keys}
        lifecycle.finish(spec, run_id, outcome, summary, epochs)
        if reporter.unlogged_metric is not None:
            raise reporter.unlogged_metric
        return outcome

    def _record_replayed(self, spec: TrialSpec, run_id: str, fitted: Fitted) -> None:
        """Curves the live sinks did not see: a retried trial's epochs before its resume (its
        run's curves start at epoch 0), and the fold-mean curves of a CV trial."""
        lifecycle = self.context.lifecycle
        resumed = fitted.folds[0].resumed_from_epoch
        if resumed:
            spec.trial.set_user_attr("resumed_from_epoch", resumed)
            lifecycle.record(run_id, list(enumerate(fitted.folds[0].history[:resumed])))
        lifecycle.record(run_id, list(enumerate(fitted.curves)))

    def _outcome(self, reporter: TrialReporter, metrics: dict[str, float]) -> TrialOutcome:
        if reporter.failure:
            return TrialOutcome(TrialState.FAIL, reason=reporter.failure, metrics=metrics)
        if reporter.pruned:
            return TrialOutcome(TrialState.PRUNED, metrics=metrics)
        value = self.context.objectives.value(metrics)
        return TrialOutcome(TrialState.COMPLETE, value, metrics=metrics)
