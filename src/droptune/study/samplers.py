"""study.sampler and study.pruner as Optuna objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from droptune.config.tune import SpaceEntry


class AskTellGridSampler(optuna.samplers.GridSampler):
    """A GridSampler for the ask/tell loop: Optuna's calls study.stop() once the grid is used up,
    which is only allowed inside study.optimize(); the loop checks is_exhausted() instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(
    study: Mapping[str, Any], space: Mapping[str, SpaceEntry], seed: int
) -> optuna.samplers.BaseSampler:
    name, args = study["sampler"], dict(study["sampler_args"])
    if name == "tpe":
        # group=True: the multivariate TPE handles conditional entries as separate subspaces
        return optuna.samplers.TPESampler(
            **{"seed": seed, "multivariate": True, "group": True, **args}
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **args)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **args)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **args)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, **args)
    return AskTellGridSampler({n: e.grid(n) for n, e in space.items()}, seed=seed, **args)


def make_pruner(study: Mapping[str, Any], max_steps: int) -> optuna.pruners.BasePruner:
    name, args = study["pruner"], dict(study["pruner_args"])
    if name == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 1, **args})
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            **{"min_resource": 1, "max_resource": max_steps, **args}
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**args)
    return optuna.pruners.NopPruner()
