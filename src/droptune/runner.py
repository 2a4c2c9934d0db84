"""Fitting configs: one split or k folds, on the device the trainer picks, tracked in MLflow.

`train` is the body of pipelines/train.py. `fit` is the untracked core that later runners reuse.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from droptune import data as ds
from droptune import targets
from droptune.config import (
    build_model,
    build_optim,
    model_constraint,
    model_sites,
    validate,
)
from droptune.data.folders import FolderSpec, load_image_folder
from droptune.data.streamed import Streamed
from droptune.errors import ConfigError
from droptune.lit import DropoutClassifier
from droptune.logged import ConstraintAfterStep, LoggedMetrics, history_source
from droptune.schema import OWN_FAMILIES
from droptune.tracking import StudyTracking, Tracker, end_status, git_commit

log = logging.getLogger("droptune")
# Lightning's per-fit banners (accelerator, tips) would repeat for every fold and trial.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 vs torch 2.14 pytree
# Each worker is one process with one device, started by sbatch or submitit: Lightning's hint to
# launch through srun is for its own multi-process jobs and would only mislead here.
warnings.filterwarnings("ignore", message="The `srun` command is available")
EpochSink = Callable[[dict[str, float], int], None]
SIGNALLED: list[int] = []  # signals that asked this worker to stop (study.exit_on_signals)


def raise_if_signalled() -> None:
    """Stop at an epoch start if a stop signal came but its exception was lost (see study.py)."""
    if SIGNALLED:
        raise SystemExit(128 + SIGNALLED[0])


class EpochPublisher(L.Callback):
    """Hands each epoch's metrics (plus its wall time) to sinks: tracking, logging, pruning."""

    def __init__(self, sinks: Sequence[EpochSink]) -> None:
        self.sinks = list(sinks)
        self._started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise_if_signalled()
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = dict(
            history_source(trainer, pl_module).history[-1],
            **{"time/epoch_s": time.perf_counter() - self._started},
        )
        for sink in self.sinks:
            sink(metrics, trainer.current_epoch)


CONTRACT = ("train/loss", "train/acc", "train/acc_eval", "val/acc", "val/acc_best", "gap/acc")


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    if not all(key in metrics for key in CONTRACT):  # a user's module: what it logged
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

    @property
    def final(self) -> dict[str, float]:
        return {**self.history[-1], **self.test}


Data = ds.Arrays | Streamed


def load_data(cfg: Mapping[str, Any]) -> Data:
    """Resident arrays (a dataset, a CSV, an image folder that fits) or a streamed source."""
    d = cfg["data"]
    if d["name"] == "custom":
        return targets.user_data(d)
    if d["name"] == "image_folder":
        keys = ("root", "image_size", "mode", "max_resident_bytes", "num_workers")
        spec = FolderSpec(**{k: d[k] for k in keys})
        loaded = load_image_folder(spec, d["test_fraction"], cfg["seed"])
        if isinstance(loaded, Streamed):
            log.info("%s does not fit in data.max_resident_bytes: streamed from disk", spec.root)
            return loaded
        return ds.holdout_test(loaded, d["test_fraction"], cfg["seed"])
    arrays = ds.load(
        d["name"],
        cfg["paths"]["data_dir"],
        d.get("mirrors", ()),  # the datasets' groups: csv's and digits' have none ...
        d.get("path"),  # ... and only csv's these
        d.get("target"),
        d.get("features"),
    )
    if "test_fraction" not in d:  # MNIST and Fashion-MNIST: their own test set
        return arrays
    return ds.holdout_test(arrays, d["test_fraction"], cfg["seed"])


def splits(cfg: Mapping[str, Any], arrays: Data) -> list[tuple[np.ndarray, np.ndarray]]:
    """One train/val split, or data.cv_folds stratified folds of the training set (a user's
    DataModule splits its own data: one fold of no indices)."""
    d = cfg["data"]
    if arrays.y_train is None:
        return [(None, None)]
    if d["cv_folds"]:
        return ds.kfold_indices(arrays.y_train, d["cv_folds"], cfg["seed"], arrays.classes)
    return [ds.train_val_indices(arrays.y_train, d["val_fraction"], cfg["seed"], arrays.classes)]


def fit(
    cfg: Mapping[str, Any],
    arrays: ds.Arrays,
    train_index: np.ndarray,
    val_index: np.ndarray,
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
    datamodule = build_datamodule(cfg, arrays, train_index, val_index, data_cache)
    timer = EpochPublisher(sinks)
    epoch_seconds: list[float] = []
    timer.sinks.append(lambda metrics, epoch: epoch_seconds.append(metrics["time/epoch_s"]))
    trainer = L.Trainer(
        **cfg["trainer"],
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
    device = str(trainer.strategy.root_device)
    source = history_source(trainer, module)
    result = FitResult(
        module,
        list(source.history),
        source.resumed_from_epoch,
        epoch_seconds=epoch_seconds,
        device=device,
    )
    if evaluate_test:
        trainer.test(module, datamodule=datamodule, verbose=False)
        result.test = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
        }
    return result


def build_module(
    cfg: Mapping[str, Any], arrays: Data
) -> tuple[L.LightningModule, list[L.Callback]]:
    """The fit's LightningModule and the callbacks it needs: droptune's classifier around the
    model, or (model=lightning) the user's own module, read through LoggedMetrics."""
    n_classes = len(arrays.classes)
    net = build_model(cfg["model"], arrays.input_shape, n_classes, lr=cfg["optim"]["lr"])
    constraint = model_constraint(cfg["model"], net)
    if cfg["model"]["family"] != "lightning":
        return DropoutClassifier(net, n_classes, build_optim(cfg["optim"]), constraint), []
    return net, [LoggedMetrics(), *([ConstraintAfterStep(constraint)] if constraint else [])]


def build_datamodule(
    cfg: Mapping[str, Any],
    arrays: Data,
    train_index: np.ndarray | None,
    val_index: np.ndarray | None,
    data_cache: dict | None,
) -> L.LightningDataModule:
    d = cfg["data"]
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
        # a user's LightningModule validates one loader; droptune's own also takes the probe
        train_probe=cfg["model"]["family"] != "lightning",
    )


def cv_summary(results: Sequence[FitResult]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean and std over folds of the final and best validation accuracy, and the mean curves."""
    final = np.array([r.history[-1]["val/acc"] for r in results])
    best = np.array([r.history[-1]["val/acc_best"] for r in results])
    metrics = {
        "cv/acc_mean": float(final.mean()),
        "cv/acc_std": float(final.std()),
        "cv/acc_best_mean": float(best.mean()),
        "cv/acc_best_std": float(best.std()),
    }
    for key in results[0].test:
        metrics[f"{key}_mean"] = float(np.mean([r.test[key] for r in results]))
    epochs = min(len(r.history) for r in results)
    curves = [
        {k: float(np.mean([r.history[e][k] for r in results])) for k in results[0].history[e]}
        for e in range(epochs)
    ]
    return metrics, curves


FoldHook = Callable[[int, list[FitResult]], bool]


@dataclass
class Fitted:
    """What fit_folds returns: summary metrics, each fold's result, and the fold-mean curves."""

    metrics: dict[str, float]
    folds: list[FitResult]
    curves: list[dict[str, float]]


def fit_folds(
    cfg: Mapping[str, Any],
    arrays: ds.Arrays,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
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
        live = [] if cross_validating else sinks
        saved = None if cross_validating else checkpoint
        results.append(
            fit(
                cfg,
                arrays,
                train_index,
                val_index,
                live,
                callbacks,
                evaluate_test,
                saved,
                data_cache,
            )
        )
        if after_fold is not None and after_fold(i, results):
            break
    if not cross_validating:
        return Fitted(results[0].final, results, [])
    metrics, curves = cv_summary(results)
    return Fitted(metrics, results, curves)


def site_params(cfg: Mapping[str, Any], arrays: Data) -> dict[str, str]:
    """The rate and class every dropout site trains with (`site.<path>`: "0.3 Dropout"): what
    the MLflow UI shows of a run's real dropout."""
    found = model_sites(cfg["model"], arrays.input_shape, len(arrays.classes)).sites
    return {f"site.{site.path}": f"{site.rate} {site.kind}" for site in found}


def run_name(cfg: Mapping[str, Any]) -> str:
    return cfg["tracking"]["run_name"] or (
        f"{cfg['data']['name']}-{cfg['model']['family']}-seed{cfg['seed']}"
    )


def train(cfg: Mapping[str, Any], choices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate, load, fit (one split or CV), evaluate if asked, track; returns the summary."""
    cfg = validate(cfg)
    arrays = load_data(cfg)
    folds = splits(cfg, arrays)
    sites = site_params(cfg, arrays)  # a glob that matches no site stops here, before any run
    tracking = cfg["tracking"]
    tracker = Tracker(tracking["uri"], tracking["experiment"], tracking["artifact_root"])
    tags = {
        "dataset": cfg["data"]["name"],
        "model": cfg["model"]["family"],
        "seed": cfg["seed"],
        "git_commit": git_commit(cfg["paths"]["root_dir"]),
        **{f"choice.{k}": v for k, v in (choices or {}).items() if v is not None},
    }
    run_id = tracker.start_run(run_name(cfg), tags)
    error: BaseException | None = None
    try:
        tracker.log_config(run_id, cfg, sites)
        fitted = fit_folds(
            cfg,
            arrays,
            folds,
            sinks=[log_epoch, lambda m, e: tracker.log_metrics(run_id, m, e)],
            evaluate_test=cfg["evaluate_test"],
        )
        metrics, results = fitted.metrics, fitted.folds
        for epoch, curve in enumerate(fitted.curves):
            tracker.log_metrics(run_id, curve, epoch)
        epoch_seconds = [s for r in results for s in r.epoch_seconds]
        metrics["time/epoch_s_mean"] = float(np.mean(epoch_seconds))
        tracker.log_metrics(run_id, metrics, len(results[0].history))
        tracker.set_tags(run_id, {"device": results[0].device})
        summary = {
            "config_name": (choices or {}).get("experiment") or "train",
            "choices": dict(choices or {}),
            "metrics": metrics,
            "folds": [r.final for r in results] if len(results) > 1 else None,
            "seconds_per_epoch": metrics["time/epoch_s_mean"],
            "device": results[0].device,
            "mlflow_run_id": run_id,
            "mlflow_experiment_id": tracker.experiment_id,
            "tracking_uri": tracker.uri,
        }
        out = Path(cfg["paths"]["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        tracker.client.log_artifact(run_id, str(out / "summary.json"))
        return summary
    except BaseException as caught:
        error = caught
        raise
    finally:
        tracker.end_run(run_id, end_status(error))


# ---- trials -------------------------------------------------------------------------------------

CV_FOLD_METRIC = {"cv/acc_mean": "val/acc", "cv/acc_best_mean": "val/acc_best"}


@dataclass
class TrialSpec:
    """A trial asked from the study and the full config its sampled overrides produce."""

    trial: optuna.Trial
    config: dict[str, Any]
    checkpoint: Path | None = None  # shared by a trial and its retries, removed when it ends


@dataclass
class TrialOutcome:
    state: TrialState
    value: float | None = None
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def diverged(metrics: Mapping[str, float], epoch: int) -> str | None:
    """Why an epoch's losses end a trial (NaN or infinite), or None."""
    losses = [k for k in metrics if k.endswith("loss")]  # a user's module names its own
    bad = next((k for k in losses if not math.isfinite(metrics[k])), None)
    return None if bad is None else f"{bad} is {metrics[bad]} at epoch {epoch}"


class TrialReporter(L.Callback):
    """Reports the study metric to the trial (every epoch, or every fold under CV), prunes, and
    stops a trial whose loss is NaN or infinite."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned = False
        self.failure: str | None = None
        self.unlogged_metric: ConfigError | None = None  # the study cannot go on: stop it

    def report(self, value: float, step: int) -> bool:
        """Report one step's value; True when the pruner says stop."""
        self.trial.report(value, step)
        self.pruned = self.trial.should_prune()
        return self.pruned

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: DropoutClassifier) -> None:
        metrics = history_source(trainer, pl_module).history[-1]
        self.failure = diverged(metrics, trainer.current_epoch) or self.check_logged(
            metrics, pl_module
        )
        if (
            self.failure
            or self.metric in metrics
            and self.report(metrics[self.metric], trainer.current_epoch)
        ):
            trainer.should_stop = True

    def check_logged(self, metrics: Mapping[str, float], module: L.LightningModule) -> str | None:
        """A module that does not log the study's metric fails its trial, and the study stops
        (every trial would fail alike), with one line saying what it logged instead."""
        if self.metric in metrics or self.metric in CV_FOLD_METRIC:
            return None
        logs = (
            "val/acc (its best is val/acc_best)" if self.metric == "val/acc_best" else self.metric
        )
        self.unlogged_metric = ConfigError(
            "study.metric",
            self.metric,
            f"a metric {type(module).__name__} logs: it logged {sorted(metrics) or 'nothing'}, "
            f"not {logs} (self.log in its validation_step, or study.metric=<one of those>)",
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
    halving's rung values) is seen by the trials decided after it, as in sequential calls.
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
        self._trials[trial.number] = self._study._storage.get_trial(trial._trial_id)
        return pruned


class SequentialRunner:
    """The standard runner: trains the trials it is given one after another, each in its own fit.

    Takes a list and returns a list, so a runner that trains K trials in one fit is a drop-in.
    """

    capacity = 1

    def __init__(
        self,
        arrays: ds.Arrays,
        folds: Sequence[tuple[np.ndarray, np.ndarray]],
        metric: str,
        tracking: StudyTracking,
        study_name: str,
    ) -> None:
        self.arrays, self.folds, self.metric = arrays, folds, metric
        self.tracking, self.study_name = tracking, study_name
        self.data_cache: dict = {}  # prepared device tensors, shared by this study's trials

    def run(self, specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
        return [self._run_one(spec) for spec in specs]

    def open_run(self, spec: TrialSpec) -> str:
        """The trial's MLflow child run; its id is kept on the trial."""
        trial = spec.trial
        try:
            sites = site_params(spec.config, self.arrays)
        except Exception:  # a config this trial cannot build: the fit fails it, saying why
            sites = {}
        run_id = self.tracking.start_trial(
            trial.number, trial.params, spec.config, self.study_name, sites
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        return run_id

    def _run_one(self, spec: TrialSpec) -> TrialOutcome:
        trial, config = spec.trial, spec.config
        run_id = self.open_run(spec)
        reporter = TrialReporter(trial, self.metric)
        epochs, curve_keys = 0, set()
        try:
            config = validate(config)
            fitted = fit_folds(
                config,
                self.arrays,
                self.folds,
                sinks=[lambda m, e: self.tracking.tracker.log_metrics(run_id, m, e)],
                callbacks=[reporter],
                after_fold=reporter.after_fold if len(self.folds) > 1 else None,
                evaluate_test=config["evaluate_test"] and self.arrays.has_test,
                checkpoint=spec.checkpoint,
                data_cache=self.data_cache,
            )
            resumed = fitted.folds[0].resumed_from_epoch
            if resumed:  # the retried trial's first epochs: its run's curves start at epoch 0
                trial.set_user_attr("resumed_from_epoch", resumed)
                for epoch, metrics in enumerate(fitted.folds[0].history[:resumed]):
                    self.tracking.tracker.log_metrics(run_id, metrics, epoch)
            for epoch, curve in enumerate(fitted.curves):
                self.tracking.tracker.log_metrics(run_id, curve, epoch)
            epochs = len(fitted.folds[0].history)
            curve_keys = set((fitted.curves or fitted.folds[0].history)[-1])
            outcome = self._outcome(reporter, fitted.metrics)
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            outcome = TrialOutcome(TrialState.FAIL, reason=f"CUDA out of memory: {error}")
        except Exception as error:  # one trial's failure must not end the study
            log.warning("trial %d failed", trial.number, exc_info=True)
            outcome = TrialOutcome(TrialState.FAIL, reason=f"{type(error).__name__}: {error}")
        finally:
            gc.collect()
        if spec.checkpoint is not None:
            shutil.rmtree(spec.checkpoint.parent, ignore_errors=True)
        summary = {k: v for k, v in outcome.metrics.items() if k not in curve_keys}
        self.tracking.finish_trial(run_id, outcome.state.name, outcome.reason, summary, epochs)
        tell(trial, config, outcome)
        if reporter.unlogged_metric is not None:
            raise reporter.unlogged_metric
        return outcome

    def _outcome(self, reporter: TrialReporter, metrics: dict[str, float]) -> TrialOutcome:
        if reporter.failure:
            return TrialOutcome(TrialState.FAIL, reason=reporter.failure, metrics=metrics)
        if reporter.pruned:
            return TrialOutcome(TrialState.PRUNED, metrics=metrics)
        return TrialOutcome(TrialState.COMPLETE, metrics[self.metric], metrics=metrics)


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
