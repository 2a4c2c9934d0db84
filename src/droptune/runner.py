"""Fitting configs: one split or k folds, on the device the trainer picks, tracked in MLflow.

`train` is the body of pipelines/train.py. `fit` is the untracked core that later runners reuse.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from droptune import data as ds
from droptune.config import build_model, build_optim, validate
from droptune.lit import DropoutClassifier
from droptune.tracking import Tracker, end_status, git_commit

log = logging.getLogger("droptune")
# Lightning's per-fit banners (accelerator, tips) would repeat for every fold and trial.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 vs torch 2.14 pytree
EpochSink = Callable[[dict[str, float], int], None]


class EpochPublisher(L.Callback):
    """Hands each epoch's metrics (plus its wall time) to sinks: tracking, logging, pruning."""

    def __init__(self, sinks: Sequence[EpochSink]) -> None:
        self.sinks = list(sinks)
        self._started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: DropoutClassifier) -> None:
        metrics = dict(
            pl_module.history[-1], **{"time/epoch_s": time.perf_counter() - self._started}
        )
        for sink in self.sinks:
            sink(metrics, trainer.current_epoch)


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    log.info(
        "epoch %3d  train/loss %.4f  train/acc %.4f  val/acc %.4f  best %.4f  gap %+.4f  %.2fs",
        epoch,
        metrics["train/loss"],
        metrics["train/acc"],
        metrics["val/acc"],
        metrics["val/acc_best"],
        metrics["gap/acc"],
        metrics["time/epoch_s"],
    )


@dataclass
class FitResult:
    module: DropoutClassifier
    history: list[dict[str, float]]
    test: dict[str, float] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    device: str = "cpu"

    @property
    def final(self) -> dict[str, float]:
        return {**self.history[-1], **self.test}


def load_data(cfg: Mapping[str, Any]) -> ds.Arrays:
    d = cfg["data"]
    arrays = ds.load(
        d["name"],
        cfg["paths"]["data_dir"],
        d.get("mirrors", ()),
        d.get("path"),
        d.get("target"),
        d.get("features"),
    )
    return ds.holdout_test(arrays, d.get("test_fraction", 0.0), cfg["seed"])


def splits(cfg: Mapping[str, Any], arrays: ds.Arrays) -> list[tuple[np.ndarray, np.ndarray]]:
    """One train/val split, or data.cv_folds stratified folds of the training set."""
    d = cfg["data"]
    if d.get("cv_folds"):
        return ds.kfold_indices(arrays.y_train, d["cv_folds"], cfg["seed"])
    return [ds.train_val_indices(arrays.y_train, d["val_fraction"], cfg["seed"])]


def fit(
    cfg: Mapping[str, Any],
    arrays: ds.Arrays,
    train_index: np.ndarray,
    val_index: np.ndarray,
    sinks: Sequence[EpochSink] = (),
    callbacks: Sequence[L.Callback] = (),
    evaluate_test: bool = False,
) -> FitResult:
    """Train one model on one split; returns its per-epoch history (and test metrics if asked)."""
    L.seed_everything(cfg["seed"], verbose=False)
    model = build_model(cfg["model"], arrays.input_shape, len(arrays.classes))
    module = DropoutClassifier(model, len(arrays.classes), build_optim(cfg["optim"]))
    datamodule = ds.TensorDataModule(
        arrays,
        train_index,
        val_index,
        cfg["data"]["batch_size"],
        standardize=cfg["data"].get("standardize", True),
        seed=cfg["seed"],
    )
    timer = EpochPublisher(sinks)
    epoch_seconds: list[float] = []
    timer.sinks.append(lambda metrics, epoch: epoch_seconds.append(metrics["time/epoch_s"]))
    trainer = L.Trainer(
        **cfg["trainer"],
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        callbacks=[timer, *callbacks],
    )
    trainer.fit(module, datamodule=datamodule)
    device = str(trainer.strategy.root_device)
    result = FitResult(module, list(module.history), epoch_seconds=epoch_seconds, device=device)
    if evaluate_test:
        trainer.test(module, datamodule=datamodule, verbose=False)
        result.test = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
        }
    return result


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


def run_name(cfg: Mapping[str, Any]) -> str:
    return cfg["tracking"].get("run_name") or (
        f"{cfg['data']['name']}-{cfg['model']['family']}-seed{cfg['seed']}"
    )


def train(cfg: Mapping[str, Any], choices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate, load, fit (one split or CV), evaluate if asked, track; returns the summary."""
    validate(cfg)
    arrays = load_data(cfg)
    folds = splits(cfg, arrays)
    tracking = cfg["tracking"]
    tracker = Tracker(tracking["uri"], tracking["experiment"], tracking.get("artifact_root"))
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
        tracker.log_config(run_id, cfg)
        live = [log_epoch, lambda m, e: tracker.log_metrics(run_id, m, e)]
        cross_validating = len(folds) > 1
        results = []
        for i, (train_index, val_index) in enumerate(folds):
            if cross_validating:
                log.info("fold %d/%d", i + 1, len(folds))
            results.append(
                fit(
                    cfg,
                    arrays,
                    train_index,
                    val_index,
                    sinks=[] if cross_validating else live,
                    evaluate_test=bool(cfg.get("evaluate_test")),
                )
            )
        if cross_validating:
            metrics, curves = cv_summary(results)
            for epoch, curve in enumerate(curves):
                tracker.log_metrics(run_id, curve, epoch)
        else:
            metrics = results[0].final
        epoch_seconds = [s for r in results for s in r.epoch_seconds]
        metrics["time/epoch_s_mean"] = float(np.mean(epoch_seconds))
        tracker.log_metrics(run_id, metrics, len(results[0].history))
        tracker.set_tags(run_id, {"device": results[0].device})
        summary = {
            "config_name": (choices or {}).get("experiment") or "train",
            "choices": dict(choices or {}),
            "metrics": metrics,
            "folds": [r.final for r in results] if cross_validating else None,
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
