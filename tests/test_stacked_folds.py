"""k-fold trials on the fused runner: each fold a member of one stacked fit, several trials'
folds together, the trial's metric each epoch the mean over its folds."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from droptune.config import validate
from droptune.fit import fit_folds
from droptune.fused.fit import train_group
from droptune.fused.grouping import Member, member_seed
from droptune.inputs import load_data, splits
from droptune.study import optimize
from tests.helpers import compose_config

FOLDS = ("data=digits", "data.cv_folds=5", "data.test_fraction=0", "model.widths=[32]")
CONFIGS = ("model.dropout.hidden=0.0", "model.dropout.hidden=0.3", "model.dropout.hidden=0.6")


def _config(tmp_path, *overrides):
    return validate(
        compose_config(
            f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "trainer.max_epochs=6",
            "model.depth=1", *FOLDS, *overrides,
        )
    )  # fmt: skip


def test_a_fold_member_trains_exactly_its_own_fold_as_a_group_of_that_fold_alone(tmp_path):
    """Padding a shorter fold to the group's longest changes nothing a member computes."""
    cfg = _config(tmp_path)
    arrays = load_data(cfg)
    folds = splits(cfg, arrays)
    assert len({len(train) for train, _ in folds}) > 1  # folds of different sizes: padded
    together: list[list[dict]] = []
    members = [Member(0, cfg, 7, split=f) for f in range(len(folds))]
    train_group(arrays, folds, members, lambda e, m: (together.append(m), [True] * len(m))[1])
    for fold, split in enumerate(folds):
        alone: list[list[dict]] = []
        train_group(
            arrays, [split], [Member(0, cfg, 7)], lambda e, m, a=alone: (a.append(m), [True])[1]
        )
        for epoch, (a, b) in enumerate(zip(alone, together, strict=True)):
            for key in ("train/loss", "train/acc", "val/acc", "val/loss", "train/acc_eval"):
                assert a[0][key] == pytest.approx(b[fold][key], rel=1e-5, abs=1e-6), (epoch, key)


def test_stacked_folds_of_three_trials_score_as_the_standard_runners_folds(tmp_path):
    """3 configs x 5 folds in one fit against the standard runner's 5 fits of each: the random
    streams differ (counter-based masks and order against torch's), so the fold means agree
    within a tolerance measured here: 2.5 points of cv/acc_mean on digits at 6 epochs."""
    cfgs = [_config(tmp_path, c) for c in CONFIGS]
    arrays = load_data(cfgs[0])
    folds = splits(cfgs[0], arrays)
    histories: list[list[dict]] = []
    members = [
        Member(t, cfg, member_seed(cfg["seed"], t), split=f)
        for t, cfg in enumerate(cfgs)
        for f in range(len(folds))
    ]
    train_group(arrays, folds, members, lambda e, m: (histories.append(m), [True] * len(m))[1])
    for t, cfg in enumerate(cfgs):
        standard = fit_folds(cfg, arrays, folds)
        stacked = np.mean([m["val/acc"] for m in histories[-1][t * 5 : (t + 1) * 5]])
        assert abs(stacked - standard.metrics["cv/acc_mean"]) <= 0.025, (
            t,
            stacked,
            standard.metrics,
        )


@pytest.mark.parametrize("runner", ["fused", "standard"])
def test_a_kfold_study_logs_cv_metrics_and_fold_mean_curves_alike_on_either_runner(
    tmp_path, runner
):
    overrides = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "trainer.max_epochs=4",
        "model.depth=1", *FOLDS, "study.n_trials=4", f"study.runner={runner}",
        "study.fused.k=4", "study.pruner=none", "study.name=folds",
    ]  # fmt: skip
    summary = optimize(compose_config(*overrides, config_name="tune"), {"data": "digits"})
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.tags["runner"] == runner
    study = optuna.load_study(study_name="folds", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    sizes = [t.user_attrs.get("fused_group_size") for t in study.trials]
    # fused: every trial's 5 folds trained stacked (groups as the search's widths allow)
    assert all(sizes) if runner == "fused" else sizes == [None] * 4, sizes
    children = client.search_runs(
        [summary["mlflow_experiment_id"]],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == 4
    for run in children:
        assert run.info.status == "FINISHED"
        metrics = run.data.metrics
        for key in ("cv/acc_mean", "cv/acc_std", "cv/acc_best_mean", "cv/acc_best_std"):
            assert key in metrics, (key, sorted(metrics))
        curve = client.get_metric_history(run.info.run_id, "val/acc")
        assert [m.step for m in curve] == [0, 1, 2, 3]  # the fold-mean curve, one per epoch
        assert 0.0 <= metrics["cv/acc_std"] <= 0.5
        assert metrics["cv/acc_mean"] == pytest.approx(curve[-1].value, abs=1e-6)
