"""The report: intervals over seeds, the configs it retrains and its baselines, the retrains
nested in MLflow and reused on a second run, and its refusals before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from droptune.errors import ConfigError
from droptune.report.candidates import TEXTBOOK, Candidate, baselines, top_configs
from droptune.report.mattered import what_mattered
from droptune.report.retrain import config_key
from droptune.report.run import make_report
from droptune.report.stats import paired_difference, t_interval
from droptune.study import optimize
from tests.helpers import compose_config


def test_a_t_interval_is_the_mean_plus_minus_the_t_quantile_times_the_standard_error():
    values = [0.81, 0.84, 0.83, 0.86, 0.80]
    interval = t_interval(values)
    half = stats.t.ppf(0.975, df=4) * np.std(values, ddof=1) / np.sqrt(5)
    assert interval.mean == pytest.approx(np.mean(values))
    assert (interval.low, interval.high) == pytest.approx(
        (np.mean(values) - half, np.mean(values) + half)
    )
    assert interval.n == 5


def test_95_percent_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    samples = rng.normal(0.7, 0.05, size=(4000, 5))
    covered = [t_interval(s).low <= 0.7 <= t_interval(s).high for s in samples]
    assert 0.93 < np.mean(covered) < 0.97


def test_a_paired_difference_removes_what_seeds_share():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.05, size=6)  # noise both configs share, seed by seed
    baseline = 0.80 + seed_effect
    dropout = baseline + 0.02 + rng.normal(0, 0.002, size=6)
    paired = paired_difference(dropout, baseline)
    assert paired.low > 0  # the gain is resolved, although the seeds' spread is larger
    apart = t_interval(dropout), t_interval(baseline)
    assert apart[0].low < apart[1].high  # the two intervals alone overlap
    with pytest.raises(ValueError, match="one per seed"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.5])


def add_trials(study, scores):
    """Trials with the given (lr, score) pairs and their `make train` overrides."""
    for lr, score in scores:
        trial = optuna.trial.create_trial(
            params={"lr": lr},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1.0)},
            value=score,
            user_attrs={"overrides": ["data=digits", f"optim.lr={lr}"]},
        )
        study.add_trial(trial)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_top_configs_are_the_best_distinct_trials_in_the_studys_direction(direction):
    study = optuna.create_study(direction=direction)
    add_trials(study, [(0.1, 0.90), (0.2, 0.70), (0.1, 0.91), (0.3, 0.80), (0.4, 0.60)])
    top = top_configs(study, 2)
    if direction == "maximize":  # trial 2 repeats trial 0's parameters: one of them only
        assert [c.trial_number for c in top] == [2, 3]
    else:
        assert [c.trial_number for c in top] == [4, 1]
    assert top[0].overrides == tuple(study.trials[top[0].trial_number].user_attrs["overrides"])
    assert top[0].study_value == study.trials[top[0].trial_number].value
    with pytest.raises(ConfigError) as error:
        top_configs(study, 5)  # four distinct parameter sets
    assert error.value.key == "report.top_k" and "4 finished" in str(error.value)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_baselines_change_only_dropout_and_max_norm_of_the_best_config(make_cfg, family):
    best_line = [
        "data=digits", f"model={family}", "optim=adam", "optim.lr=0.003", "model.dropout.hidden=0.3",
        "model.dropout.input=0.1", "model.dropout.placement=before", "model.max_norm=2.5",
    ]  # fmt: skip
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={}, distributions={}, value=0.9, user_attrs={"overrides": best_line}
        )
    )
    (best,) = top_configs(study, 1)
    none, textbook = baselines(best, family)
    best_cfg, none_cfg, book_cfg = (make_cfg(*c.overrides) for c in (best, none, textbook))
    rates = [k for k in ("input", "hidden", "output", "conv") if k in best_cfg["model"]["dropout"]]
    assert all(none_cfg["model"]["dropout"][k] == 0 for k in rates)
    assert none_cfg["model"]["max_norm"] is None
    assert book_cfg["model"]["dropout"]["input"] == TEXTBOOK["input"]
    assert book_cfg["model"]["dropout"]["hidden"] == TEXTBOOK["hidden"]
    assert book_cfg["model"]["dropout"]["placement"] == "after"
    assert book_cfg["model"]["max_norm"] == TEXTBOOK["max_norm"]
    for changed in (none_cfg, book_cfg):  # network, optimizer, data: the best config's
        for group in ("optim", "data", "trainer"):
            assert changed[group] == best_cfg[group]
        assert {k: v for k, v in changed["model"].items() if k not in ("dropout", "max_norm")} == {
            k: v for k, v in best_cfg["model"].items() if k not in ("dropout", "max_norm")
        }


def test_a_users_model_has_no_baselines_yet():
    with pytest.raises(ConfigError) as error:
        baselines(Candidate("trial 0", ("model=custom",)), "custom")
    assert error.value.key == "model.family"


BASE = ["trainer.accelerator=cpu", "data=digits", "trainer.max_epochs=3", "model.width=32"]


def tuned_study(tmp_path, n_trials=6):
    tune = [f"paths.root_dir={tmp_path}", *BASE, "study.name=r", f"study.n_trials={n_trials}"]
    return optimize(compose_config(*tune, config_name="tune"), {"data": "digits"}, tune)


def report(tmp_path, *extra):
    overrides = [f"paths.root_dir={tmp_path}", *BASE, "study.name=r", *extra]
    cfg = compose_config(*overrides, config_name="report")
    return make_report(cfg, {"data": "digits"}, overrides), cfg


def retrain_runs(client, report_run_id):
    experiment = client.get_run(report_run_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{report_run_id}'")


@pytest.mark.slow
def test_a_report_retrains_winners_and_baselines_over_seeds_and_reuses_what_it_finished(tmp_path):
    study = tuned_study(tmp_path)
    first, cfg = report(tmp_path, "report.top_k=2", "report.seeds=2")
    client = MlflowClient(cfg["tracking"]["uri"])
    run_id = first["mlflow_report_run_id"]
    assert len(retrain_runs(client, run_id)) == 4 * 2
    again, again_cfg = report(tmp_path, "report.top_k=2", "report.seeds=3")  # one seed more
    assert again["mlflow_report_run_id"] == run_id
    runs = retrain_runs(client, run_id)
    assert len(runs) == 4 * 3 and all(r.info.status == "FINISHED" for r in runs)
    report_run = client.get_run(run_id)
    assert report_run.info.status == "FINISHED"
    assert report_run.data.tags["mlflow.parentRunId"] == study["mlflow_parent_run_id"]

    rows = {row["name"]: row for row in again["configs"]}
    assert list(rows)[2:] == ["no dropout", "textbook"]
    for row in again["configs"]:  # the numbers, from what the runs logged
        mine = sorted(
            (r for r in runs if r.data.tags["report_candidate"] == row["name"]),
            key=lambda r: int(r.data.tags["report_seed"]),
        )
        logged = [r.data.metrics["test/acc"] for r in mine]
        key = config_key(Candidate(row["name"], tuple(row["overrides"])))
        assert {r.data.tags["report_config"] for r in mine} == {key}  # reused by config, not name
        assert [int(r.data.tags["report_seed"]) for r in mine] == row["seeds"] == again["seeds"]
        low, high = stats.t.interval(
            0.95, len(logged) - 1, loc=np.mean(logged), scale=stats.sem(logged)
        )
        interval = row["intervals"]["test/acc"]
        assert interval["mean"] == pytest.approx(np.mean(logged))
        assert (interval["low"], interval["high"]) == pytest.approx((low, high))
        if row["name"] != "no dropout":
            baseline = [r.data.metrics["test/acc"] for r in sorted(
                (r for r in runs if r.data.tags["report_candidate"] == "no dropout"),
                key=lambda r: int(r.data.tags["report_seed"]),
            )]  # fmt: skip
            assert row["vs_no_dropout"]["mean"] == pytest.approx(
                np.mean(logged) - np.mean(baseline)
            )
    assert again["what_mattered"]["trials"] == sum(t.state.name == "COMPLETE" for t in optuna.load_study(
        study_name="r", storage=cfg["study"]["storage"]).trials)  # fmt: skip
    assert 0 not in again["seeds"]  # the study's own seed, on which its winners were picked
    winner = study["best_trial"]
    assert rows[f"trial {winner}"]["study_value"] == pytest.approx(study["best_value"])
    assert json.loads((Path(again_cfg["paths"]["output_dir"]) / "report.json").read_text()) == again

    last, _ = report(tmp_path, "report.top_k=2", "report.seeds=3")  # all there: trains nothing
    assert len(retrain_runs(client, run_id)) == 12 and last["configs"] == again["configs"]


def test_a_report_of_a_study_that_is_not_there_stops_with_one_line_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError) as error:
        report(tmp_path)
    assert error.value.key == "study.name" and "(it has: none)" in str(error.value)
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_a_report_asking_more_configs_than_the_study_has_or_other_data_stops_first(tmp_path):
    tuned_study(tmp_path, n_trials=2)
    with pytest.raises(ConfigError) as error:
        report(tmp_path, "report.top_k=3")
    assert error.value.key == "report.top_k"
    with pytest.raises(ConfigError) as error:
        report(tmp_path, "data.val_fraction=0.3")
    assert error.value.key == "data.val_fraction" and "0.2" in str(error.value)
    with pytest.raises(ConfigError) as error:
        report(tmp_path, "report.seeds=1")
    assert error.value.key == "report.seeds"
    assert not (tmp_path / "outputs" / "report").exists()


def test_what_mattered_counts_each_dropout_choice_with_its_best_and_median():
    study = optuna.create_study(direction="maximize")
    lines = [
        (["model.dropout.placement=after", "model.dropout.input=0.0", "model.max_norm=null"], 0.90),
        (["model.dropout.placement=after", "model.dropout.input=0.2", "model.max_norm=3.0"], 0.80),
        (
            ["model.dropout.placement=before", "model.dropout.input=0.0", "model.max_norm=null"],
            0.70,
        ),
        (["model.dropout.placement=after", "model.dropout.hidden=[0.5,0.7]"], 0.60),
    ]
    for i, (line, score) in enumerate(lines):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": float(i)},
                distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
                value=score,
                user_attrs={"overrides": ["data=digits", *line]},
            )
        )
    found = what_mattered(study)
    placement = {row["value"]: row for row in found["per_choice"]["placement"]}
    assert placement["after"]["trials"] == 3 and placement["after"]["best"] == 0.90
    assert placement["after"]["median"] == pytest.approx(np.median([0.90, 0.80, 0.60]))
    assert placement["before"]["trials"] == 1
    assert {r["value"]: r["trials"] for r in found["per_choice"]["input dropout"]} == {
        "on": 1,
        "off": 2,
    }
    assert {r["value"] for r in found["per_choice"]["max-norm"]} == {"on", "off"}
    assert found["per_choice"]["hidden rate"] == [
        {"value": "0.5-1.0", "trials": 1, "best": 0.60, "median": 0.60}
    ]  # a list of rates, binned by its mean
    assert "variant" not in found["per_choice"]  # never chosen: the study's default throughout
    assert set(found["importances"]) == {"x"} and found["trials"] == 4
