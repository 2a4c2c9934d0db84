"""One tracked training run, the body of `make train`: validate, load, fit, evaluate, track."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from droptune.build import site_params
from droptune.config import validate
from droptune.describe import config_label
from droptune.fit import fit_folds, log_epoch
from droptune.inputs import load_data, splits
from droptune.plots import log_reliability_diagram
from droptune.quiet import quiet_libraries
from droptune.tracked_data import dataset_input
from droptune.tracking import Tracker, end_status, git_commit


def run_name(cfg: Mapping[str, Any], sites: Mapping[str, str]) -> str:
    """tracking.run_name, or what the run trains: 'mlp · hidden 0.5 after · 512x512 · lr 0.1 ·
    seed 0'."""
    label = config_label(cfg, sites)
    return cfg["tracking"]["run_name"] or f"{cfg['model']['family']} · {label} · seed {cfg['seed']}"


def train(
    cfg: Mapping[str, Any],
    choices: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    log_epochs: bool = True,
) -> dict[str, Any]:
    """Validate, load, fit (one split or CV), evaluate if asked, track; returns the summary.

    `parent_run_id` nests the run (a report's retrains under the report's run); `tags` add to
    droptune's own; `log_epochs=False` keeps the epochs out of the log (still in MLflow)."""
    quiet_libraries()
    cfg = validate(cfg)
    arrays = load_data(cfg)
    folds = splits(cfg, arrays)
    # a glob that matches no site stops here, before any run
    sites = site_params(cfg["model"], arrays.input_shape, len(arrays.classes))
    tracking = cfg["tracking"]
    tracker = Tracker(tracking["uri"], tracking["experiment"], tracking["artifact_root"])
    run_tags = {
        "dataset": cfg["data"]["name"],
        "model": cfg["model"]["family"],
        "seed": cfg["seed"],
        "git_commit": git_commit(cfg["paths"]["root_dir"]),
        **{f"choice.{k}": v for k, v in (choices or {}).items() if v is not None},
        **(tags or {}),
    }
    run_id = tracker.start_run(run_name(cfg, sites), run_tags, parent_run_id)
    error: BaseException | None = None
    try:
        tracker.log_config(run_id, cfg, sites)
        tracker.log_dataset(run_id, dataset_input(cfg["data"], arrays, folds))
        fitted = fit_folds(
            cfg,
            arrays,
            folds,
            sinks=[
                *([log_epoch] if log_epochs else []),
                lambda m, e: tracker.log_metrics(run_id, m, e),
            ],
            evaluate_test=cfg["evaluate_test"],
        )
        metrics, results = fitted.metrics, fitted.folds
        for epoch, curve in enumerate(fitted.curves):
            tracker.log_metrics(run_id, curve, epoch)
        epoch_seconds = [s for r in results for s in r.epoch_seconds]
        metrics["time/epoch_s_mean"] = float(np.mean(epoch_seconds))
        tracker.log_metrics(run_id, metrics, len(results[0].history))
        tracker.set_tags(run_id, {"device": results[0].device})
        bins = [r.calibration for r in results if r.calibration is not None]
        if bins:  # the final model's (under CV: every fold's final model's) validation predictions
            log_reliability_diagram(tracker.client, run_id, sum(bins))
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
