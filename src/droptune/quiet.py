"""Library messages that would repeat for every fold and trial, or mislead, silenced in one place.

The entry functions (`train`, `optimize`, the benchmark) call `quiet_libraries` first; importing
droptune changes no filter or log level of its own accord.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna


def quiet_libraries() -> None:
    """Idempotent: warnings.filterwarnings moves an existing filter to the front, not twice."""
    # Lightning's per-fit banners (accelerator, tips) would repeat for every fold and trial
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    # MLflow's system-metrics sampler says when it starts and stops, every study run
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 vs torch 2.14 pytree
    # each worker is one process with one device, started by sbatch or submitit: Lightning's hint
    # to launch through srun is for its own multi-process jobs and would only mislead here
    warnings.filterwarnings("ignore", message="The `srun` command is available")
    # heartbeats, TPE's `group` and fail_stale_trials are marked experimental; the ask/tell loop
    # records heartbeats itself, which is what Optuna's "use with Study.optimize" warning is about
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    # a fused group's StackedOptimizer steps itself (manual optimization): there is no torch
    # optimizer to hand Lightning, and its "this fit will run with no optimizer" would mislead
    warnings.filterwarnings(
        "ignore", message="`LightningModule.configure_optimizers` returned `None`"
    )
    # droptune's classifier evaluates the datamodule's validation loaders itself, at each
    # epoch's end (lit.py): Lightning's "skipping val loop" is what droptune asked for
    warnings.filterwarnings("ignore", message="You passed in a `val_dataloader` but have no")


@contextmanager
def young_study_importances() -> Iterator[None]:
    """Optuna's importance evaluator warns of parameters with few trials: every young study,
    each time its importances are read (the study's plots, the report)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="optuna.importance")
        yield
