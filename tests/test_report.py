"""The report: intervals over seeds, the configs it retrains and its baselines, the retrains
nested in MLflow and reused on a second run, and its refusals before any training."""

from __future__ import annotations

import html as htmllib
import json
import re
import signal
import time
from pathlib import Path

import lightning as L
import numpy as np
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy import stats

from droptune.build import model_sites
from droptune.config import validate
from droptune.data.module import TensorDataModule
from droptune.errors import ConfigError
from droptune.fit import fit
from droptune.fused.fit import stacked_net
from droptune.fused.grouping import Member, member_seed
from droptune.inputs import load_data, splits
from droptune.report.candidates import TEXTBOOK, Candidate, baselines, top_configs
from droptune.report.documents import write_documents
from droptune.report.mattered import what_mattered
from droptune.report.numbers import headline, numbers, table
from droptune.report.retrain import SCORES, Retrain, config_key, train_config
from droptune.report.run import make_report, plan
from droptune.report.stats import paired_difference, t_interval
from droptune.study import optimize
from tests.helpers import REPO, chromium, compose_config
from tests.launch import Launched


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


def test_top_configs_of_a_two_objective_study_are_its_pareto_front_best_first_by_the_first():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("fingerprint_parts", {"study.objectives": ["val/acc", "val/ece"]})
    points = [(0.90, 0.05), (0.85, 0.02), (0.80, 0.06), (0.92, 0.08), (0.84, 0.03)]
    for i, values in enumerate(points):  # trial 2 is dominated by 0 (and 1); 4 by 1
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 0.1 * (i + 1)},
                distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1.0)},
                values=list(values),
                user_attrs={"overrides": ["data=digits", f"optim.lr={0.1 * (i + 1)}"]},
            )
        )
    top = top_configs(study, 3)
    assert [c.trial_number for c in top] == [3, 0, 1]  # by val/acc among the front's
    assert [c.study_value for c in top] == [0.92, 0.90, 0.85]
    with pytest.raises(ConfigError) as error:
        top_configs(study, 4)
    assert "3 Pareto trial(s)" in str(error.value)


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


def test_a_users_models_baselines_are_no_dropout_and_as_written_and_no_textbook(make_cfg):
    net = "model._target_=examples.mynets.nets.SmallConvNet"
    tuned = (
        "data=digits",
        "model=custom",
        net,
        "model.dropout.sites={features.*:0.3,head.drop:0.4}",
    )
    none, written = baselines(Candidate("trial 0", tuned), "custom")
    cfgs = [make_cfg(*line) for line in (tuned, none.overrides, written.overrides)]
    rates = [{s.path: s.rate for s in model_sites(c["model"], (1, 8, 8), 10).sites} for c in cfgs]
    assert len(rates[0]) == 3 and any(r > 0 for r in rates[0].values())
    assert rates[1].keys() == rates[0].keys() and set(rates[1].values()) == {0.0}
    assert set(rates[2].values()) == {0.25}  # SmallConvNet's own p
    assert cfgs[1]["model"]["max_norm"] is None and cfgs[2]["model"]["max_norm"] is None


BASE = ["trainer.accelerator=cpu", "data=digits", "trainer.max_epochs=3", "model.width=32"]
STANDARD = ["study.runner=standard", "report.runner=standard"]


def tuned_study(tmp_path, n_trials=6):
    tune = [f"paths.root_dir={tmp_path}", *BASE, "study.name=r", f"study.n_trials={n_trials}"]
    tune.append(STANDARD[0])
    return optimize(compose_config(*tune, config_name="tune"), {"data": "digits"}, tune)


def report(tmp_path, *extra):
    """Retrains one by one (auto would stack these small MLPs on a CPU: test_stacked_runs)."""
    overrides = [f"paths.root_dir={tmp_path}", *BASE, "study.name=r", *STANDARD, *extra]
    cfg = compose_config(*overrides, config_name="report")
    return make_report(cfg, overrides), cfg


def retrain_runs(client, report_run_id):
    experiment = client.get_run(report_run_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{report_run_id}'")


@pytest.fixture
def test_reads(monkeypatch):
    """How often the held-out test split is read (each read: one evaluation of one model)."""
    reads = []
    own = TensorDataModule.test_dataloader

    def counted(self):
        reads.append(self)
        return own(self)

    monkeypatch.setattr(TensorDataModule, "test_dataloader", counted)
    return reads


@pytest.mark.slow
def test_a_report_retrains_winners_and_baselines_over_seeds_and_reuses_what_it_finished(
    tmp_path, test_reads
):
    study = tuned_study(tmp_path)
    assert test_reads == []  # the study selects on validation only
    first, cfg = report(tmp_path, "report.top_k=2", "report.seeds=2")
    client = MlflowClient(cfg["tracking"]["uri"])
    run_id = first["mlflow_report_run_id"]
    assert len(retrain_runs(client, run_id)) == 4 * 2
    assert len(test_reads) == 4 * 2  # once per retrain, by its final model
    again, again_cfg = report(tmp_path, "report.top_k=2", "report.seeds=3")  # one seed more
    assert len(test_reads) == 4 * 3  # the 8 reused retrains are not tested again
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
            assert row["vs_reference"]["mean"] == pytest.approx(np.mean(logged) - np.mean(baseline))
    assert again["what_mattered"]["trials"] == sum(t.state.name == "COMPLETE" for t in optuna.load_study(
        study_name="r", storage=cfg["study"]["storage"]).trials)  # fmt: skip
    assert 0 not in again["seeds"]  # the study's own seed, on which its winners were picked
    winner = study["best_trial"]
    assert rows[f"trial {winner}"]["study_value"] == pytest.approx(study["best_value"])
    out = Path(again_cfg["paths"]["output_dir"])
    assert json.loads((out / "report.json").read_text()) == again
    assert headline(again) in (out / "report.md").read_text()
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.json", "report.md", "report.html"} <= logged

    last, _ = report(tmp_path, "report.top_k=2", "report.seeds=3")  # all there: trains nothing
    assert len(retrain_runs(client, run_id)) == 12 and last["configs"] == again["configs"]
    assert len(test_reads) == 12


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
    study.set_user_attr("fingerprint_parts", {"study.metric": "val/acc_best"})  # as tune writes
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
    assert found["metric"] == "val/acc_best"


def fabricated_report(study, seeds=(1, 2, 3)):
    """A report of the study's two best and a no-dropout baseline, from made-up seed scores."""
    candidates = [*top_configs(study, 2), Candidate("no dropout", ("data=digits",))]
    rng = np.random.default_rng(0)
    retrains = [
        Retrain(c.name, seed, {"test/acc": rng.uniform(0.8, 0.9), "gap/acc": 0.01}, "run")
        for c in candidates
        for seed in seeds
    ]
    configs = numbers(
        candidates,
        retrains,
        metric="test/acc",
        keys=SCORES,
        confidence=0.95,
        reference="no dropout",
    )
    return {
        "report": "r", "study": study.study_name, "fingerprint": "f", "droptune_version": "v",
        "git_commit": "c", "metric": "test/acc", "split": "test set", "confidence": 0.95,
        "reference": "no dropout", "seeds": list(seeds), "configs": configs,
        "what_mattered": what_mattered(study), "mlflow_report_run_id": "run",
    }  # fmt: skip


@pytest.mark.browser
def test_the_html_report_opens_offline_in_chromium_with_its_headline_tables_and_plots(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="r")
    add_trials(study, [(0.1, 0.90), (0.2, 0.70), (0.3, 0.80)])
    result = fabricated_report(study)
    json_path, md_path, html_path = write_documents(result, study, tmp_path / "out")
    assert json.loads(json_path.read_text()) == result
    page = html_path.read_text()
    assert "<script src=" not in page  # plotly's script is inlined: the file opens offline
    dom = chromium(html_path.as_uri(), tmp_path / "report.png")
    text = " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", dom)).split())
    assert headline(result) in text
    for row in table(result):  # every cell of the configs' table, in order, on the page
        assert " ".join(" ".join(row).split()) in text
    figures = page.count('class="plotly-graph-div"')
    drawn = dom.count('class="plotly-graph-div js-plotly-plot"')  # plotly's mark of a drawn plot
    assert figures >= 2 and drawn == figures  # the per-seed plot and the study's, all drawn
    assert (tmp_path / "report.png").stat().st_size > 20_000  # a page, not a blank
    md = md_path.read_text()
    assert headline(result) in md and "| trial 0 | " in md


def test_a_report_refuses_bad_configs_before_any_run(tmp_path):
    def planned(*extra):
        overrides = [f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", *extra]
        return make_report(compose_config(*overrides, config_name="report"), overrides)

    no_study = ("report.from_study=false", "report.baselines=false")
    refused = {
        "report.configs": [*no_study],
        "report.reference": [*no_study, 'report.configs={a:["data=digits"]}'],
        "the line of 'a'": [*no_study, "report.reference=a", 'report.configs={a:["experiment=nope"]}'],
        "data.val_fraction (in 'a')": [
            *no_study, "report.reference=a", 'report.configs={a:["data=digits","data.val_fraction=2.0"]}'
        ],
        "data.cv_folds": [
            *no_study, "report.reference=a",
            'report.configs={a:["data=digits"],b:["experiment=seed004_sonar_baseline"]}',
        ],
        "report.configs ": [  # a name the baselines take
            "report.from_study=false", "report.reference=a",
            'report.configs={a:["data=digits"],textbook:["data=digits"]}',
        ],
    }  # fmt: skip
    for key, overrides in refused.items():
        with pytest.raises(ConfigError) as error:
            planned(*overrides)
        assert error.value.key == key.strip(), (key, str(error.value))
    assert not (tmp_path / "mlruns" / "optuna.db").exists()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.parametrize(
    ("preset", "metric", "names"),
    [
        ("seed004_sonar", "cv/acc_mean", ["baseline", "input", "hidden"]),
        ("d2l_fashion", "test/acc", ["d2l", "no dropout", "textbook"]),
    ],
)
def test_the_compare_presets_plan_the_seed_tutorials_configs(tmp_path, preset, metric, names):
    overrides = [f"paths.root_dir={tmp_path}", f"compare={preset}"]
    planned = plan(validate(compose_config(*overrides, config_name="report")), overrides)
    assert [c.name for c in planned.candidates] == names and planned.metric == metric
    assert not any(o.startswith("compare=") for c in planned.candidates for o in c.overrides)


def test_paired_seeds_share_initial_weights_and_data_order_across_configs_of_one_shape(tmp_path):
    best = Candidate("trial 0", (
        "data=digits", "trainer.accelerator=cpu", f"paths.root_dir={tmp_path}", "trainer.max_epochs=1",
        "model.widths=[32,16]", "model.dropout.hidden=0.4", "model.dropout.input=0.1", "model.max_norm=2.0",
    ))  # fmt: skip

    def start(candidate, seed):
        """The model's parameters and the targets of the first batch of a retrain's fit."""
        cfg = train_config(
            [*candidate.overrides, "evaluate_test=true", "test_seed=0", f"seed={seed}"]
        )
        arrays = load_data(cfg)
        ((train_index, val_index),) = splits(cfg, arrays)
        seen = {}

        class First(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == 0:
                    seen["weights"] = [p.detach().clone() for p in pl_module.parameters()]
                    seen["targets"] = batch[0][1].clone()  # its first step's (x, y)

        fit(cfg, arrays, train_index, val_index, callbacks=[First()])
        return seen

    none, textbook = baselines(best, "mlp")
    one = [start(c, seed=1) for c in (best, none, textbook)]
    for other in one[1:]:
        assert torch.equal(one[0]["targets"], other["targets"])
        pairs = zip(one[0]["weights"], other["weights"], strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    two = start(best, seed=2)  # another seed: another start
    assert not torch.equal(one[0]["targets"], two["targets"])
    assert not torch.equal(one[0]["weights"][0], two["weights"][0])


@pytest.mark.slow
def test_a_killed_report_loses_only_the_retrain_in_flight_and_a_rerun_completes_it(tmp_path):
    tuned_study(tmp_path, n_trials=2)
    extra = ["report.top_k=1", "report.seeds=2", "trainer.max_epochs=40"]
    overrides = [f"paths.root_dir={tmp_path}", *BASE, "study.name=r", *STANDARD, *extra]
    process = Launched([str(REPO / "pipelines" / "report.py"), *overrides], stdout=tmp_path / "log")
    cfg = compose_config(*overrides, config_name="report")
    client = MlflowClient(cfg["tracking"]["uri"])
    experiment = client.get_experiment_by_name(cfg["tracking"]["experiment"]).experiment_id
    deadline, finished = time.time() + 300, []
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.3)
        runs = [r for r in client.search_runs([experiment]) if "report_seed" in r.data.tags]
        finished = [r.info.run_id for r in runs if r.info.status == "FINISHED"]
        running = [r for r in runs if r.info.status == "RUNNING" and r.data.metrics]
        if len(finished) >= 2 and running:  # mid-retrain, with epochs logged
            break
    else:
        process.kill()
        pytest.fail(
            f"the report never got two retrains in: {(tmp_path / 'log').read_text()[-3000:]}"
        )
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL

    result, _ = report(tmp_path, *extra)
    runs = retrain_runs(client, result["mlflow_report_run_id"])
    states = sorted(r.info.status for r in runs)
    assert states == ["FINISHED"] * 3 * 2 + ["KILLED"]  # the one in flight, kept as killed
    assert set(finished) <= {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert all(len(row["seeds"]) == 2 for row in result["configs"])


def test_a_fused_report_trains_a_seeds_mlp_configs_in_one_fit_and_the_others_alone(tmp_path):
    mlp = ["data=digits", "trainer.max_epochs=3", "model.widths=[32,16]"]
    configs = f"report.configs={{a:{json.dumps(mlp)},alpha:{json.dumps([*mlp, 'model.dropout.variant=alpha'])}}}"
    overrides = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "report.from_study=false",
        "report.runner=fused", "report.seeds=2", "report.reference=a", configs,
    ]  # fmt: skip
    cfg = compose_config(*overrides, config_name="report")
    result = make_report(cfg, overrides)
    client = MlflowClient(cfg["tracking"]["uri"])
    runs = retrain_runs(client, result["mlflow_report_run_id"])
    runner = {(r.data.tags["report_candidate"], r.data.tags["report_seed"]): r for r in runs}
    assert len(runner) == 4 * 2 and all(r.info.status == "FINISHED" for r in runs)
    for (name, _), run in runner.items():  # the stacked model has no alpha variant: alone
        assert run.data.tags["runner"] == ("standard" if name == "alpha" else "fused")
        assert "test/acc" in run.data.metrics
        history = client.get_metric_history(run.info.run_id, "val/acc")
        assert [m.step for m in history][:3] == [0, 1, 2]  # every epoch
    rows = {row["name"]: row for row in result["configs"]}
    assert rows["no dropout"]["values"]["test/acc"] == [
        runner[("no dropout", str(s))].data.metrics["test/acc"] for s in result["seeds"]
    ]


def test_fused_retrains_of_one_seed_and_shape_start_from_the_same_weights(tmp_path):
    best = Candidate("a", ("data=digits", "model.widths=[32,16]", "model.dropout.hidden=0.4"))
    lines = [best, *baselines(best, "mlp")]
    seed = member_seed(3, 0)
    members = [Member(i, validate(train_config(c.overrides)), seed) for i, c in enumerate(lines)]
    net = stacked_net(members, 64, 10, "fp32")
    for weights in net.weights:
        assert all(torch.equal(weights[0], weights[k]) for k in (1, 2))
    other = stacked_net([Member(0, members[0].config, member_seed(4, 0))], 64, 10, "fp32")
    assert not torch.equal(other.weights[0][0], net.weights[0][0])
