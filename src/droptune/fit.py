"""Training only: one fit of one config on one split, or k folds. No Optuna, no MLflow.

What happens each epoch is handed to sinks (tracking, logging, a trial's reports) and callbacks
(pruning); with a checkpoint path a fit saves itself every epoch and resumes from what it finds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from droptune import data as ds
from droptune import signals
from droptune.build import (
    build_model,
    build_optim,
    dropout_schedule,
    model_constraint,
    model_sites,
)
from droptune.data.streamed import Streamed
from droptune.inputs import Data, Split
from droptune.lit import DropoutClassifier, GradientClip
from droptune.logged import ConstraintAfterStep, LoggedMetrics, history_source
from droptune.models.sites import holders

log = logging.getLogger("droptune")
EpochSink = Callable[[dict[str, float], int], None]
FoldHook = Callable[[int, list["FitResult"]], bool]
CONTRACT = ("train/loss", "train/acc", "train/acc_eval", "val/acc", "val/acc_best", "gap/acc")


class EpochPublisher(L.Callback):
    """Hands each epoch's metrics (plus its wall time) to sinks: tracking, logging, pruning."""

    def __init__(self, sinks: Sequence[EpochSink]) -> None:
        self.sinks = list(sinks)
        self._started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signals.raise_if_received()
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = dict(
            history_source(trainer, pl_module).history[-1],
            **{"time/epoch_s": time.perf_counter() - self._started},
        )
        for sink in self.sinks:
            sink(metrics, trainer.current_epoch)


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    """The console line of an epoch: droptune's metric contract, or what a user's module logged."""
    if not all(key in metrics for key in CONTRACT):
        shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k != "time/epoch_s")
        log.info("epoch %3d  %s  %.2fs", epoch, shown, metrics["time/epoch_s"])
        return
    log.info(
        "epoch %3d  train/loss %.4f  train/acc %.4f (eval %.4f)  val/acc %.4f  best %.4f  gap %+.4f  %.2fs",
        epoch,
        metrics["train/loss"],
        metrics["train/acc"],
        metrics["train/acc_eval"],
        metrics["val/acc"],
        metrics["val/acc_best"],
        metrics["gap/acc"],
        metrics["time/epoch_s"],
    )


class EpochCheckpoint(L.Callback):
    """Saves the fit's whole state after every epoch, atomically: a kill mid-write leaves the
    previous checkpoint intact, so a retried trial always resumes from a readable one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(staged, weights_only=False)
        os.replace(staged, self.path)


@dataclass
class FitResult:
    module: L.LightningModule
    history: list[dict[str, float]]
    resumed_from_epoch: int = 0
    test: dict[str, float] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    device: str = "cpu"
    calibration: torch.Tensor | None = None  # the final model's validation bins (droptune's module)

    @property
    def final(self) -> dict[str, float]:
        return {**self.history[-1], **self.test}


def fit(
    cfg: Mapping[str, Any],
    arrays: Data,
    train_index: np.ndarray | None,
    val_index: np.ndarray | None,
    *,
    sinks: Sequence[EpochSink] = (),
    callbacks: Sequence[L.Callback] = (),
    evaluate_test: bool = False,
    checkpoint: Path | None = None,
    data_cache: dict | None = None,
) -> FitResult:
    """Train one model on one split; returns its per-epoch history (and test metrics if asked).

    With `checkpoint`, the state is saved there after every epoch, and a fit that finds one there
    resumes from it (a retried trial).
    """
    L.seed_everything(cfg["seed"], verbose=False)
    module, own_callbacks = build_module(cfg, arrays)
    datamodule = build_datamodule(cfg, arrays, (train_index, val_index), data_cache)
    timer = EpochPublisher(sinks)
    epoch_seconds: list[float] = []
    timer.sinks.append(lambda metrics, epoch: epoch_seconds.append(metrics["time/epoch_s"]))
    trainer = L.Trainer(
        **trainer_arguments(cfg),
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        callbacks=[
            *own_callbacks,  # first: the others read the epoch history they keep
            timer,
            *callbacks,
            *([EpochCheckpoint(checkpoint)] if checkpoint else []),
        ],
    )
    resume = checkpoint if checkpoint is not None and checkpoint.exists() else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=False)
    source = history_source(trainer, module)
    result = FitResult(
        module=module,
        history=list(source.history),
        resumed_from_epoch=source.resumed_from_epoch,
        epoch_seconds=epoch_seconds,
        device=str(trainer.strategy.root_device),
        calibration=module.val_bins if isinstance(module, DropoutClassifier) else None,
    )
    if evaluate_test:
        trainer.test(module, datamodule=datamodule, verbose=False)
        result.test = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
        }
    return result


CLIP_KEYS = ("gradient_clip_val", "gradient_clip_algorithm")


def own_module(cfg: Mapping[str, Any]) -> bool:
    """droptune's classifier trains the model (anything but model=lightning)."""
    return cfg["model"]["family"] != "lightning"


def trainer_arguments(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """trainer.* for lightning.Trainer; droptune's classifier clips its gradients and evaluates
    its validation data itself (Lightning's evaluation loop is skipped for it)."""
    t = cfg["trainer"]
    if not own_module(cfg):
        return dict(t)
    return {k: v for k, v in t.items() if k not in CLIP_KEYS} | {"limit_val_batches": 0}


def build_module(
    cfg: Mapping[str, Any], arrays: Data
) -> tuple[L.LightningModule, list[L.Callback]]:
    """The fit's LightningModule and the callbacks it needs: droptune's classifier around the
    model, or (model=lightning) the user's own module, read through LoggedMetrics."""
    n_classes = len(arrays.classes)
    net = build_model(cfg["model"], arrays.input_shape, n_classes, lr=cfg["optim"]["lr"])
    constraint = model_constraint(cfg["model"], net)
    sites = model_sites(cfg["model"], arrays.input_shape, n_classes).sites
    schedule = dropout_schedule(cfg["model"], net, sites)
    scheduled = [schedule] if schedule is not None else []
    if not own_module(cfg):
        constrained = [ConstraintAfterStep(constraint)] if constraint else []
        return net, [LoggedMetrics(), *constrained, *scheduled]
    t = cfg["trainer"]
    clip = (
        GradientClip(t["gradient_clip_val"], t.get("gradient_clip_algorithm"))
        if t.get("gradient_clip_val")
        else None
    )
    optim = build_optim(cfg["optim"])
    mc_samples = cfg["evaluate"]["mc_samples"]
    module = DropoutClassifier(
        net,
        optim,
        constraint,
        gradient_clip=clip,
        mc_samples=mc_samples,
        dropout_holders=holders(net, sites),
    )
    return module, scheduled


def build_datamodule(
    cfg: Mapping[str, Any], arrays: Data, split: Split, data_cache: dict | None
) -> L.LightningDataModule:
    d = cfg["data"]
    train_index, val_index = split
    if isinstance(arrays, Streamed):
        return arrays.datamodule(train_index, val_index, d["batch_size"], cfg["seed"])
    return ds.TensorDataModule(
        arrays,
        train_index,
        val_index,
        d["batch_size"],
        standardize=d["standardize"],
        seed=cfg["seed"],
        cache=data_cache,
        # a user's LightningModule validates one loader and steps once a batch; droptune's own
        # also takes the probe, and many steps a batch
        train_probe=own_module(cfg),
        steps_per_batch=ds.STEPS_PER_BATCH if own_module(cfg) else None,
    )


def cv_metrics(
    finals: Sequence[Mapping[str, float]], tests: Sequence[Mapping[str, float]]
) -> dict[str, float]:
    """Mean and std over folds of the final and best validation accuracy, and each test metric's
    mean: from each fold's last epoch (`finals`) and test metrics (`tests`)."""
    final = np.array([f["val/acc"] for f in finals])
    best = np.array([f["val/acc_best"] for f in finals])
    metrics = {
        "cv/acc_mean": float(final.mean()),
        "cv/acc_std": float(final.std()),
        "cv/acc_best_mean": float(best.mean()),
        "cv/acc_best_std": float(best.std()),
    }
    for key in tests[0]:
        metrics[f"{key}_mean"] = float(np.mean([t[key] for t in tests]))
    return metrics


def fold_mean(epochs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One epoch of the fold-mean curves: each metric's mean over the folds."""
    return {k: float(np.mean([e[k] for e in epochs])) for k in epochs[0]}


def cv_summary(results: Sequence[FitResult]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The CV metrics of k fits, and their fold-mean curves."""
    metrics = cv_metrics([r.history[-1] for r in results], [r.test for r in results])
    epochs = min(len(r.history) for r in results)
    curves = [fold_mean([r.history[e] for r in results]) for e in range(epochs)]
    return metrics, curves


@dataclass
class Fitted:
    """What fit_folds returns: summary metrics, each fold's result, and the fold-mean curves."""

    metrics: dict[str, float]
    folds: list[FitResult]
    curves: list[dict[str, float]]


def fit_folds(
    cfg: Mapping[str, Any],
    arrays: Data,
    folds: Sequence[Split],
    *,
    sinks: Sequence[EpochSink] = (),
    callbacks: Sequence[L.Callback] = (),
    evaluate_test: bool = False,
    after_fold: FoldHook | None = None,
    checkpoint: Path | None = None,
    data_cache: dict | None = None,
) -> Fitted:
    """Fit one split (live sinks see every epoch) or k folds (fold-mean curves come back).

    after_fold(i, results) may return True to stop early (a pruned or failed CV trial).
    `checkpoint` (one split only: a CV trial is refitted whole) saves and resumes the fit.
    """
    cross_validating = len(folds) > 1
    results: list[FitResult] = []
    for i, (train_index, val_index) in enumerate(folds):
        if cross_validating:
            log.debug("fold %d/%d", i + 1, len(folds))
        result = fit(
            cfg,
            arrays,
            train_index,
            val_index,
            sinks=[] if cross_validating else sinks,
            callbacks=callbacks,
            evaluate_test=evaluate_test,
            checkpoint=None if cross_validating else checkpoint,
            data_cache=data_cache,
        )
        results.append(result)
        if after_fold is not None and after_fold(i, results):
            break
    if not cross_validating:
        return Fitted(results[0].final, results, [])
    metrics, curves = cv_summary(results)
    return Fitted(metrics, results, curves)
