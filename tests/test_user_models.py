"""A user's own nn.Module, LightningModule and DataModule (examples/mynets), trained by
`make train` and tuned by `make tune` on digits: what the MLflow runs and the study hold."""

import json
import subprocess
import sys

import lightning as L
import optuna
import pytest
from mlflow.tracking import MlflowClient

from droptune.errors import ConfigError
from droptune.train import train
from examples.mynets.data import DigitsData
from tests import launch
from tests.helpers import REPO

NET = "model._target_=examples.mynets.nets.SmallConvNet"
LIT = "model._target_=examples.mynets.lit.LitConvNet"
DATA = "data._target_=examples.mynets.data.DigitsData"
SITES = ("features.2", "encoder.drop", "head.drop")


def run(tmp_path, pipeline: str, *overrides: str) -> subprocess.CompletedProcess:
    return launch.run(
        [
            str(REPO / "pipelines" / f"{pipeline}.py"),
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/out",
            "trainer.accelerator=cpu",
            *overrides,
        ],
        timeout=600,
        cwd=REPO,
    )


def trial_runs(tmp_path, experiment: str = "droptune-digits"):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.droptune_role = 'trial'")
    return client, runs


def test_make_train_on_a_users_module_records_each_sites_rate(tmp_path):
    done = run(
        tmp_path, "train", "model=custom", NET, "trainer.max_epochs=2",
        "model.dropout.sites={head.*:0.5}", "model.max_norm=3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    run_data = MlflowClient(summary["tracking_uri"]).get_run(summary["mlflow_run_id"]).data
    assert run_data.params["site.head.drop"] == "0.5 Dropout"
    assert run_data.params["site.features.2"] == "0.25 Dropout2d"
    assert run_data.params["model._target_"] == "examples.mynets.nets.SmallConvNet"
    assert {"gap/acc", "val/acc_best"} <= set(run_data.metrics)


def test_make_tune_on_a_users_module_searches_one_rate_per_site(tmp_path):
    done = run(
        tmp_path, "tune", "data=digits", "model=custom", NET, "trainer.max_epochs=2",
        "study.n_trials=3", "study.pruner=none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = trial_runs(tmp_path)
    assert len(runs) == 3
    for trial_run in runs:
        params = trial_run.data.params
        for site in SITES:  # what the sampler chose is what the site trained with
            chosen = float(params[f"trial.rate/{site}"])
            assert params[f"site.{site}"].split()[0] == str(chosen)
        assert "trial.lr" in params
    assert "model.dropout.sites={" in done.stdout.split("retrain it:  make train")[1]


def test_a_tuned_trials_retrain_line_rebuilds_its_rates(tmp_path):
    done = run(
        tmp_path, "tune", "data=digits", "model=custom", NET, "trainer.max_epochs=1",
        "study.n_trials=1", "study.pruner=none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    overrides = [o for o in summary["best_overrides"] if not o.startswith("paths.")]
    again = run(tmp_path / "again", "train", *overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    retrained = json.loads((tmp_path / "again" / "out" / "summary.json").read_text())
    client = MlflowClient(retrained["tracking_uri"])
    params = client.get_run(retrained["mlflow_run_id"]).data.params
    for site in SITES:
        assert float(params[f"site.{site}"].split()[0]) == summary["best_params"][f"rate/{site}"]


@pytest.mark.slow
def test_a_users_lightning_module_is_tuned_and_pruned_on_what_it_logs(tmp_path):
    done = run(
        tmp_path, "tune", "data=digits", "model=lightning", LIT, "trainer.max_epochs=3",
        "study.n_trials=6", "study.metric=val/acc", "study.pruner=median",
        "+study.pruner_args.n_startup_trials=2", "+study.pruner_args.n_warmup_steps=0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = trial_runs(tmp_path)
    study = optuna.load_study(
        study_name="digits-lightning-sites", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    by_run = {r.info.run_id: r for r in runs}
    for trial in study.trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        logged = {m.step: m.value for m in client.get_metric_history(run_id, "val/acc")}
        assert trial.intermediate_values == logged  # the module's own val/acc, every epoch
        assert "site.net.head.drop" in by_run[run_id].data.params
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states, states


def test_a_lightning_module_that_never_logs_the_metric_stops_the_study_with_one_line(tmp_path):
    done = run(
        tmp_path, "tune", "data=digits", "model=lightning",
        "model._target_=examples.mynets.lit.SilentConvNet", "trainer.max_epochs=1", "study.n_trials=4",
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert "study.metric='val/acc_best'" in errors[0] and "val_accuracy" in errors[0]
    _, runs = trial_runs(tmp_path)
    assert len(runs) == 1 and runs[0].data.tags["state"] == "FAIL"  # not the whole budget


def test_a_users_datamodule_trains_with_its_own_split_and_test_set(make_cfg):
    cfg = make_cfg("data=custom", DATA, "model=custom", NET, "trainer.max_epochs=2")
    summary = train(dict(cfg, evaluate_test=True))
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert "gap/acc" not in summary["metrics"]  # its one val loader: no training probe


def test_a_users_datamodule_cannot_be_cross_validated(make_cfg):
    with pytest.raises(ConfigError, match="data.cv_folds=3.*splits its own"):
        train(make_cfg("data=custom", DATA, "data.cv_folds=3"))


class DigitsWithoutValidation(DigitsData):
    val_dataloader = L.LightningDataModule.val_dataloader  # the base's: "must be implemented"


def test_a_users_datamodule_without_a_val_dataloader_is_refused_before_training(make_cfg):
    cfg = make_cfg("data=custom", f"data._target_={__name__}.DigitsWithoutValidation")
    with pytest.raises(ConfigError, match="data._target_=.*DigitsWithoutValidation has none"):
        train(cfg)


@pytest.mark.fresh_store  # it checks that nothing is written
def test_an_unknown_target_stops_with_one_line_naming_it_and_the_import_error(tmp_path):
    done = run(tmp_path, "train", "model=custom", "model._target_=mypkg.nets.ResNetish")
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert "model._target_='mypkg.nets.ResNetish'" in errors[0]
    assert "No module named 'mypkg'" in errors[0]
    assert not (tmp_path / "mlruns").exists()


def test_a_glob_matching_no_site_stops_before_the_study(tmp_path):
    done = run(
        tmp_path, "tune", "data=digits", "model=custom", NET, "model.dropout.sites={decoder.*:0.2}"
    )
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "decoder.*" in errors[0] and "encoder.drop" in errors[0]
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_a_misspelt_key_gets_the_nearest_key(tmp_path):
    done = run(tmp_path, "train", "model.dropout.hiden=0.3")
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "did you mean model.dropout.hidden?" in errors[0]
    assert "model.dropout.hiden" in errors[0]


def test_make_sites_lists_paths_kinds_classes_rates_roles_and_max_norm_layers(tmp_path):
    done = subprocess.run(
        ["make", "--no-print-directory", "sites", f"PY={sys.executable}",
         "ARGS=model=custom " + NET + " model.dropout.sites={head.*:0.5} model.max_norm=2"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert ["head.drop", "module", "Dropout", "0.5", "head.drop"] in rows
    assert ["features.2", "module", "Dropout2d", "0.25", "features.2"] in rows
    assert ["encoder.linear"] in rows and ["head.out"] not in rows  # max-norm's layers


def test_make_train_on_a_users_lightning_module_keeps_its_logged_curves(tmp_path):
    done = run(tmp_path, "train", "model=lightning", LIT, "trainer.max_epochs=2", "optim.lr=0.2")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    client = MlflowClient(summary["tracking_uri"])
    params = client.get_run(summary["mlflow_run_id"]).data.params
    assert params["site.net.head.drop"] == "0.25 Dropout"
    history = client.get_metric_history(summary["mlflow_run_id"], "val/acc")
    accs = {m.step: m.value for m in history}
    best = {
        m.step: m.value for m in client.get_metric_history(summary["mlflow_run_id"], "val/acc_best")
    }
    assert set(accs) == {0, 1, 2}  # two epochs, then the summary at step 2
    assert best[1] == max(accs[0], accs[1])
    assert "train/loss" in summary["metrics"]  # what the module logged, as it named it


def test_a_fused_study_of_a_users_model_runs_on_the_standard_runner_said_once(tmp_path):
    done = run(
        tmp_path, "tune", "data=digits", "model=custom", NET, "trainer.max_epochs=1",
        "study.n_trials=2", "study.runner=fused", "study.fused.k=2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stdout.splitlines() if "runs on the standard runner" in line]
    assert len(said) == 1 and "model=custom" in said[0]
    assert len(trial_runs(tmp_path)[1]) == 2


def test_a_resumed_lightning_fit_keeps_its_logged_history(make_cfg, tmp_path):
    from droptune.fit import fit
    from droptune.inputs import load_data, splits

    cfg = make_cfg("model=lightning", LIT, "trainer.max_epochs=4")
    data = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, data)
    whole = fit(cfg, data, train_index, val_index)
    half = dict(cfg, trainer=dict(cfg["trainer"], max_epochs=2))
    fit(half, data, train_index, val_index, checkpoint=tmp_path / "c.ckpt")
    resumed = fit(cfg, data, train_index, val_index, checkpoint=tmp_path / "c.ckpt")
    assert resumed.resumed_from_epoch == 2
    assert resumed.history == whole.history  # same masks and data order after the resume


def test_testing_a_lightning_module_without_a_test_step_is_refused_before_training(make_cfg):
    cfg = make_cfg("model=lightning", LIT, "evaluate_test=true")
    with pytest.raises(ConfigError, match="evaluate_test=True.*LitConvNet has none"):
        train(cfg)
