"""Studies on digits: MLflow structure, pruning, resume within budget, failures, fingerprint,
retraining the best trial, and a worker killed with SIGKILL mid-trial."""

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from droptune.errors import ConfigError
from droptune.search import parse_space, suggest
from droptune.study import optimize
from droptune.study.budget import budget_used
from droptune.study.samplers import make_sampler
from droptune.study.storage import StaleTrialHandler, fail_stale, make_storage
from droptune.train import train
from tests import launch
from tests.helpers import REPO, compose_config
from tests.launch import Launched

SMALL = ["data=digits", "trainer.max_epochs=3", "study.name=s", "model.width=32"]


def tune_overrides(tmp_path, *extra):
    """The standard runner unless a test names one (auto would stack these small trials on a
    CPU: the fused runner's own tests are in test_fused and test_stacked_*)."""
    runner = [] if any(o.startswith("study.runner=") for o in extra) else ["study.runner=standard"]
    return [f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", *SMALL, *runner, *extra]


def run_study(tmp_path, *extra, space=None):
    overrides = tune_overrides(tmp_path, *extra)
    cfg = compose_config(*overrides, config_name="tune")
    if space is not None:
        cfg["search"].update(space=space, enqueue=[])
    return optimize(cfg, {"data": "digits", "model": "mlp", "optim": "sgd"}, overrides), cfg


def load(cfg):
    return optuna.load_study(study_name=cfg["study"]["name"], storage=cfg["study"]["storage"])


def test_study_trials_nest_under_one_parent_run_with_their_states(tmp_path):
    summary, cfg = run_study(tmp_path, "study.n_trials=4", "evaluate_test=true")
    study = load(cfg)
    assert summary["n_complete"] + summary["n_pruned"] + summary["n_failed"] == 4
    client = MlflowClient(cfg["tracking"]["uri"])
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["droptune_role"] == "study"
    assert parent.data.params["study.n_trials"] == "4"
    assert "study/best_value" in parent.data.metrics
    assert parent.data.metrics["study/best_value"] == pytest.approx(summary["best_value"])
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {
        "plots/optimization_history.html",
        "plots/parallel_coordinate.html",
        "plots/dropout_vs_metric.png",
        "plots/gap_vs_dropout.png",
    } <= plots
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 4
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["state"] == trial.state.name
        assert run.data.tags["trial_number"] == str(trial.number)
        assert run.data.params["trial.hidden_rate"] == str(trial.params["hidden_rate"])
        assert run.info.status == ("FAILED" if trial.state == TrialState.FAIL else "FINISHED")
        curve = client.get_metric_history(run.info.run_id, "val/acc")
        assert len(curve) == len(trial.intermediate_values) > 0
        if trial.state == TrialState.COMPLETE:  # its own model, evaluated on the held-out test set
            assert run.data.metrics["test/acc"] == trial.user_attrs["test_acc"]
    assert summary["best_test_acc"] == study.best_trial.user_attrs["test_acc"]
    # both embedded stores commit by appending to a write-ahead log (stores.py)
    for url in (cfg["study"]["storage"], cfg["tracking"]["uri"]):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal", url


@pytest.mark.slow
def test_aggressive_pruner_prunes_and_pruned_runs_are_not_failed(tmp_path):
    summary, cfg = run_study(
        tmp_path,
        "study.n_trials=8",
        "trainer.max_epochs=4",
        "study.sampler=random",
        "study.pruner=median",
        "+study.pruner_args.n_startup_trials=1",
        "+study.pruner_args.n_warmup_steps=0",
    )
    study = load(cfg)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and summary["n_pruned"] == len(pruned)
    client = MlflowClient(cfg["tracking"]["uri"])
    for trial in pruned:
        assert len(trial.intermediate_values) < 4  # stopped before the last epoch
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "PRUNED"


@pytest.mark.slow
def test_resume_never_exceeds_the_budget(tmp_path):
    first, cfg = run_study(tmp_path, "study.n_trials=3")
    again, _ = run_study(tmp_path, "study.n_trials=3")
    assert len(load(cfg).trials) == 3
    assert again["mlflow_parent_run_id"] == first["mlflow_parent_run_id"]
    run_study(tmp_path, "study.n_trials=5")
    study = load(cfg)
    assert len(study.trials) == 5 and budget_used(study) == 5
    client = MlflowClient(cfg["tracking"]["uri"])
    children = client.search_runs(
        [client.get_experiment_by_name(cfg["tracking"]["experiment"]).experiment_id],
        f"tags.mlflow.parentRunId = '{first['mlflow_parent_run_id']}'",
    )
    assert len(children) == 5


def test_a_diverging_trial_fails_and_the_study_goes_on(tmp_path):
    space = {"lr": {"path": "optim.lr", "type": "categorical", "choices": [0.05, 1.0e6]}}
    summary, cfg = run_study(tmp_path, "study.n_trials=2", "study.sampler=grid", space=space)
    study = load(cfg)
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert by_lr[0.05].state == TrialState.COMPLETE
    failed = by_lr[1.0e6]
    assert failed.state == TrialState.FAIL
    assert "nan" in failed.user_attrs["fail_reason"] or "inf" in failed.user_attrs["fail_reason"]
    assert summary["n_failed"] == 1 and summary["best_params"] == {"lr": 0.05}
    run = MlflowClient(cfg["tracking"]["uri"]).get_run(failed.user_attrs["mlflow_run_id"])
    assert (
        run.info.status == "FAILED"
        and run.data.tags["fail_reason"] == failed.user_attrs["fail_reason"]
    )


def test_an_error_inside_one_trial_fails_only_that_trial(tmp_path):
    # depth 1 with two widths is an invalid config: that trial fails with the validation message
    space = {"depth": {"path": "model.depth", "type": "categorical", "choices": [1, 2]}}
    summary, cfg = run_study(
        tmp_path,
        "study.n_trials=2",
        "study.sampler=grid",
        "model.widths=[16,16]",
        "model.depth=2",
        space=space,
    )
    states = {t.params["depth"]: t for t in load(cfg).trials}
    assert states[2].state == TrialState.COMPLETE
    assert states[1].state == TrialState.FAIL
    assert "model.depth=1" in states[1].user_attrs["fail_reason"]


def test_changed_fingerprint_is_refused_unless_allowed(tmp_path):
    run_study(tmp_path, "study.n_trials=1")
    with pytest.raises(ConfigError) as error:
        run_study(tmp_path, "study.n_trials=2", "data.val_fraction=0.3")
    assert "val_fraction" in str(error.value) and "study.allow_changes=true" in str(error.value)
    with pytest.raises(ConfigError, match="search.space"):
        run_study(tmp_path, "study.n_trials=2", "search.space.lr.high=0.5")
    summary, cfg = run_study(
        tmp_path, "study.n_trials=2", "data.val_fraction=0.3", "study.allow_changes=true"
    )
    assert len(load(cfg).trials) == 2


def test_bad_study_settings_stop_before_the_first_trial(tmp_path):
    for override, key in [
        ("study.sampler=annealing", "study.sampler"),
        ("study.pruner=early", "study.pruner"),
        ("study.n_trials=0", "study.n_trials"),
        ("study.name=nan", "study.name"),  # Hydra reads it as a float
        ("study.metric=test/acc", "study.metric"),
        ("study.direction=minimize", "study.direction"),
        ("study.runner=fused study.fused.k=0", "study.fused.k"),
        ("study.fused.compile=sometimes", "study.fused.compile"),
        ("study.fused.precision=fp16", "study.fused.precision"),
    ]:
        with pytest.raises(ConfigError) as error:
            run_study(tmp_path, *override.split())
        assert error.value.key == key
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_best_overrides_retrain_to_the_same_validation_value(tmp_path):
    summary, _ = run_study(tmp_path, "study.n_trials=3", "study.pruner=none")
    cfg = compose_config(*summary["best_overrides"], f"paths.root_dir={tmp_path}")
    assert cfg["data"]["name"] == "digits"
    retrained = train(cfg)
    assert retrained["metrics"]["val/acc_best"] == pytest.approx(summary["best_value"], abs=1e-9)


def test_enqueued_configs_run_first_and_only_when_the_study_is_created(tmp_path):
    first = {"lr": 0.2, "momentum": 0.9, "hidden_rate": 0.3}
    enqueue = "search.enqueue=[{lr: 0.2, momentum: 0.9, hidden_rate: 0.3}]"
    run_study(tmp_path, "study.n_trials=2", "study.sampler=random", enqueue)
    _, cfg = run_study(tmp_path, "study.n_trials=4", "study.sampler=random", enqueue)
    trials = sorted(load(cfg).trials, key=lambda t: t.number)
    assert len(trials) == 4
    assert {name: trials[0].params[name] for name in first} == first
    assert all(
        {name: t.params[name] for name in first} != first for t in trials[1:]
    )  # the resume queued nothing again


@pytest.mark.parametrize(
    "entry, key",
    [
        ("{learning_rate: 0.1}", "search.enqueue.0.learning_rate"),
        ("{lr: 5.0}", "search.enqueue.0.lr"),
        ("{variant: bernoulli}", "search.enqueue.0.variant"),
    ],
)
def test_a_bad_enqueued_config_stops_before_the_study_opens(tmp_path, entry, key):
    with pytest.raises(ConfigError) as error:
        run_study(tmp_path, f"search.enqueue=[{entry}]")
    assert error.value.key == key
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_timeout_stops_asking_for_new_trials(tmp_path):
    summary, cfg = run_study(tmp_path, "study.n_trials=50", "study.timeout=1")
    assert 1 <= len(load(cfg).trials) < 50


def test_cross_validation_objective(tmp_path):
    summary, cfg = run_study(tmp_path, "study.n_trials=2", "data.cv_folds=3", "study.pruner=none")
    study = load(cfg)
    assert study.user_attrs["fingerprint_parts"]["study.metric"] == "cv/acc_mean"
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [0, 1, 2]  # one report per fold


def dominates(a, b, maximize):
    """a is at least as good as b in every objective and better in one (directions per value)."""
    at_least = all((x >= y) if up else (x <= y) for x, y, up in zip(a, b, maximize, strict=True))
    return at_least and a != b


@pytest.mark.parametrize("runner", ["standard", "fused"])
def test_a_two_objective_study_keeps_a_pareto_front_of_non_dominated_trials(
    tmp_path, runner, caplog
):
    summary, cfg = run_study(
        tmp_path,
        "study.n_trials=8",
        "study.objectives=[val/acc,val/ece]",
        "study.sampler=random",
        f"study.runner={runner}",
        "study.fused.k=4",
    )
    assert "study.pruner=median is off" in caplog.text  # said, and no trial was pruned
    study = load(cfg)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and all(not t.intermediate_values for t in complete)
    client = MlflowClient(cfg["tracking"]["uri"])
    for trial in complete:  # each value is what its run logged at its last epoch
        logged = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        assert trial.values == [logged["val/acc"], logged["val/ece"]]
    values = {t.number: t.values for t in complete}
    up = (True, False)
    front = {p["trial"] for p in summary["pareto_front"]}
    for number, value in values.items():
        beaten = any(dominates(other, value, up) for other in values.values())
        assert (number in front) == (not beaten)  # the front is exactly the non-dominated
    assert summary["best_trial"] is None and summary["objectives"] == {
        "val/acc": "maximize",
        "val/ece": "minimize",
    }
    parent = summary["mlflow_parent_run_id"]
    logged_front = client.download_artifacts(parent, "pareto_front.json", str(tmp_path))
    assert {p["trial"] for p in json.loads(Path(logged_front).read_text())} == front
    plots = {a.path for a in client.list_artifacts(parent, "plots")}
    assert {"plots/pareto_front.html", "plots/param_importances.html"} <= plots
    metrics = client.get_run(parent).data.metrics
    assert metrics["study/pareto_front_size"] == len(front)


@pytest.mark.parametrize(
    "objectives, extra, allowed",
    [
        ("[val/acc]", "", "two or more"),
        ("[val/acc,val/acc]", "", "each metric once"),
        ("[val/acc,test/acc]", "", "metrics of val/acc_best"),
        ("[val/acc,val/ece:maximize]", "", "val/ece is minimize"),
        ("[val/acc,val/ece]", "study.metric=val/acc", "null with study.objectives"),
        ("[val/acc,my/metric:minimize]", "", "metrics of val/acc_best"),  # droptune's own model
        ("[val/acc,val/ece]", "study.sampler=cmaes", "CMA-ES optimises one objective"),
    ],
)
def test_bad_objectives_stop_before_the_study_opens(tmp_path, objectives, extra, allowed):
    with pytest.raises(ConfigError) as error:
        run_study(tmp_path, f"study.objectives={objectives}", *extra.split())
    assert error.value.key.startswith("study.") and allowed in str(error.value)
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_resuming_a_study_with_other_objectives_is_refused(tmp_path):
    run_study(tmp_path, "study.n_trials=1")
    with pytest.raises(ConfigError) as error:
        run_study(tmp_path, "study.n_trials=2", "study.objectives=[val/acc,val/ece]")
    assert error.value.key == "study.objectives" and "maximize, as study" in str(error.value)


def test_trials_the_fused_runner_cannot_stack_run_alone_said_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="droptune")
    space = {
        "hidden_rate": {"path": "model.dropout.hidden", "type": "float", "low": 0.1, "high": 0.5}
    }
    summary, cfg = run_study(
        tmp_path,
        "study.n_trials=3",
        "study.runner=fused",
        "study.fused.k=3",
        "model.dropout.variant=dropconnect",
        space=space,
    )
    said = "trials with variant=dropconnect (the fused runner stacks"
    assert caplog.text.count(said) == 1 and summary["n_complete"] == 3
    client = MlflowClient(cfg["tracking"]["uri"])
    for trial in load(cfg).trials:  # each trained alone, with its weights dropped
        params = client.get_run(trial.user_attrs["mlflow_run_id"]).data.params
        assert "WeightDropout" in params["site.net.5.parametrizations.weight.0"]


def rdb_storage(tmp_path, name):
    cfg = compose_config(*tune_overrides(tmp_path), config_name="tune")
    s = {**cfg["study"], "storage": f"sqlite:///{tmp_path}/{name}.db"}
    return cfg, s, make_storage(s, StaleTrialHandler(None, lambda trial: None))


def ask_two_batches(tmp_path, name, batched):
    """Two batches of 12 asks on a fresh SQLite study (the second one TPE's, with its liars);
    returns the study and how many trials its storage loaded from the database."""
    cfg, s, storage = rdb_storage(tmp_path, name)
    space = parse_space(cfg["search"]["space"], cfg)
    loaded, read = [0], storage._backend._get_trials

    def counting_read(*args, **kwargs):
        trials = read(*args, **kwargs)
        loaded[0] += len(trials)
        return trials

    storage._backend._get_trials = counting_read
    study = optuna.create_study(storage=storage, sampler=make_sampler(s, space, 0))
    for _ in range(2):
        with storage.batch() if batched else nullcontext():
            trials = []
            for _ in range(12):
                trials.append(study.ask())
                suggest(trials[-1], space)
        for i, trial in enumerate(trials):
            study.tell(trial, i / 12)
    return study, loaded[0]


def test_a_batch_of_asks_samples_as_single_asks_do_from_a_quarter_of_the_loads(tmp_path):
    single, loaded_single = ask_two_batches(tmp_path, "single", batched=False)
    batched, loaded_batched = ask_two_batches(tmp_path, "batched", batched=True)
    assert [t.params for t in batched.trials] == [t.params for t in single.trials]
    assert len({str(t.params) for t in batched.trials}) == 24
    assert loaded_batched * 4 < loaded_single


def test_a_batch_of_asks_sees_the_trials_a_peer_creates_meanwhile(tmp_path):
    _, s, storage = rdb_storage(tmp_path, "shared")
    study = optuna.create_study(study_name="s", storage=storage)
    peer = optuna.load_study(study_name="s", storage=s["storage"])  # its own cache
    lr = {"lr": optuna.distributions.FloatDistribution(0.1, 0.2)}
    with storage.batch():
        mine = study.ask(lr)
        theirs = peer.ask(lr)
        seen = [(t.number, t.params) for t in study.get_trials()]
    assert seen == [(mine.number, mine.params), (theirs.number, theirs.params)]


def start_worker_mid_trial(tmp_path, overrides, saved_as="last.ckpt"):
    """Start pipelines/tune.py and return (process, the trial it is running) once it trains and
    has saved a checkpoint (`saved_as`: the standard runner's, or fused.pt: a fused member's)."""
    worker = Launched(
        [str(REPO / "pipelines" / "tune.py"), *overrides], stdout=tmp_path / "worker.log"
    )
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        if not (tmp_path / "mlruns" / "optuna.db").exists():
            continue
        try:
            trials = optuna.load_study(study_name="s", storage=storage).trials
        except Exception:  # the worker is still creating the study
            continue
        saved = tmp_path / "outputs" / "checkpoints" / "s"
        running = [
            t
            for t in trials
            if t.state == TrialState.RUNNING and (saved / f"trial_{t.number}" / saved_as).exists()
        ]
        if running:  # mid-trial, with at least one epoch saved (of 60 or more)
            return worker, running[0]
    worker.kill()
    pytest.fail("the worker never started a trial")


FUSED = ["study.runner=fused", "study.fused.k=2", "study.fused.checkpoint_interval=0"]
BEATING = ["study.heartbeat_interval=1", "study.grace_period=3", "study.pruner=none"]
SLOW_TRIALS = ["study.n_trials=2", *BEATING, "trainer.max_epochs=60"]
# a fused epoch of two members takes about twice a standard one: the same time before the kill
SLOW_FUSED_TRIALS = ["study.n_trials=2", *BEATING, "trainer.max_epochs=30", *FUSED]
# for a worker that is stopped mid-trial by the test: a trial that outlasts any machine's pace
ENDLESS_TRIALS = ["study.n_trials=2", *BEATING, "trainer.max_epochs=100000"]


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["standard", "fused"])
def test_a_killed_worker_trial_is_failed_retried_and_the_budget_completes(tmp_path, runner):
    fused = runner == "fused"
    overrides = tune_overrides(tmp_path, *(SLOW_FUSED_TRIALS if fused else SLOW_TRIALS))
    worker, running = start_worker_mid_trial(
        tmp_path, overrides, "fused.pt" if fused else "last.ckpt"
    )
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(4)  # past the grace period

    cfg = compose_config(*overrides, config_name="tune")
    optimize(cfg, {"data": "digits"}, overrides)
    study = load(cfg)
    dead = study.trials[running.number]
    assert dead.state == TrialState.FAIL and "fail_reason" not in dead.user_attrs
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert (
        1 <= retry.user_attrs["resumed_from_epoch"] <= len(dead.intermediate_values)
    )  # from its checkpoint
    assert not (
        tmp_path / "outputs" / "checkpoints" / "s" / f"trial_{dead.number}"
    ).exists()  # cleaned
    assert budget_used(study) == 2
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    client = MlflowClient(cfg["tracking"]["uri"])
    dead_run = client.get_run(running.user_attrs["mlflow_run_id"])
    assert dead_run.info.status == "KILLED" and dead_run.data.tags["state"] == "FAIL"
    retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])  # nests under the worker's parent
    assert retry_run.data.tags["mlflow.parentRunId"] == dead_run.data.tags["mlflow.parentRunId"]


@pytest.mark.slow
def test_a_live_workers_trial_outlasting_the_grace_period_is_not_failed_by_a_peer(tmp_path):
    overrides = tune_overrides(tmp_path, *ENDLESS_TRIALS)
    worker, running = start_worker_mid_trial(tmp_path, overrides)
    try:
        cfg = compose_config(*overrides, config_name="tune")
        s = cfg["study"]
        handler = StaleTrialHandler(None, lambda trial: None)
        peer = optuna.load_study(study_name=s["name"], storage=make_storage(s, handler))
        time.sleep(s["grace_period"] + 2)  # the trial started longer ago than that; it beats
        assert worker.poll() is None
        fail_stale(peer, s["grace_period"], handler)
        assert peer.trials[running.number].state == TrialState.RUNNING
    finally:
        worker.kill()
        worker.wait()


def test_ctrl_c_while_a_batch_is_asked_queues_its_trials_again(tmp_path, monkeypatch):
    import droptune.study.loop

    overrides = tune_overrides(tmp_path, *FUSED, "study.fused.k=4", "study.n_trials=4")
    asked = []

    def interrupted_on_the_third(trial, space):
        asked.append(trial.number)
        if len(asked) == 3:
            raise KeyboardInterrupt
        return suggest(trial, space)

    monkeypatch.setattr(droptune.study.loop, "suggest", interrupted_on_the_third)
    cfg = compose_config(*overrides, config_name="tune")
    with pytest.raises(KeyboardInterrupt):
        optimize(cfg, {"data": "digits"}, overrides)
    trials = load(cfg).trials
    assert [t.number for t in trials if t.state == TrialState.FAIL] == asked
    assert all(t.user_attrs.get("interrupted") for t in trials if t.state == TrialState.FAIL)
    assert sum(t.state == TrialState.WAITING for t in trials) == 3
    assert not any(t.state == TrialState.RUNNING for t in trials)


def test_a_fused_batch_interrupted_in_a_later_group_keeps_the_trials_that_finished(
    tmp_path, monkeypatch
):
    import droptune.fused.fit

    overrides = tune_overrides(tmp_path, *FUSED, "study.fused.k=8", "study.n_trials=8")
    groups, real_train_group = [], droptune.fused.fit.train_group

    def interrupted_in_the_second(arrays, splits, members, *args, **kwargs):
        groups.append(len(members))
        if len(groups) == 2:
            raise KeyboardInterrupt
        return real_train_group(arrays, splits, members, *args, **kwargs)

    monkeypatch.setattr(droptune.fused.fit, "train_group", interrupted_in_the_second)
    cfg = compose_config(*overrides, config_name="tune")
    with pytest.raises(KeyboardInterrupt):
        optimize(cfg, {"data": "digits"}, overrides)
    assert len(groups) == 2
    trials = load(cfg).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    interrupted = [
        t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
    ]
    assert len(finished) >= groups[0] and len(finished) + len(interrupted) == 8
    assert sum(t.state == TrialState.WAITING for t in trials) == len(interrupted) >= groups[1]
    client = MlflowClient(cfg["tracking"]["uri"])
    for trial in finished:
        assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "FINISHED"


KILLED_WHILE_ASKING = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import droptune.study.loop
from tests.helpers import compose_config
asked, real_suggest = [], droptune.study.loop.suggest
def killed_on_the_third(trial, space):
    asked.append(trial.number)
    if len(asked) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_suggest(trial, space)
droptune.study.loop.suggest = killed_on_the_third
overrides = sys.argv[2:]
droptune.study.loop.optimize(compose_config(*overrides, config_name="tune"), {}, overrides)
"""


@pytest.mark.slow
def test_a_worker_killed_while_it_asks_a_batch_has_its_trials_retried(tmp_path):
    overrides = tune_overrides(
        tmp_path, *FUSED, "study.fused.k=4", "study.n_trials=4", *BEATING[:2]
    )
    killed = launch.run(["-c", KILLED_WHILE_ASKING, str(REPO), *overrides], timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    cfg = compose_config(*overrides, config_name="tune")
    assert sum(t.state == TrialState.RUNNING for t in load(cfg).trials) == 3
    time.sleep(4)  # past the grace period

    # a worker that waited for them forever would time out
    resumed = launch.run([str(REPO / "pipelines" / "tune.py"), *overrides], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = load(cfg).trials
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert sum(t.state == TrialState.FAIL for t in trials) == 3
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_at_once_and_queues_it_again(tmp_path):
    overrides = tune_overrides(tmp_path, *ENDLESS_TRIALS)
    worker, running = start_worker_mid_trial(tmp_path, overrides)
    os.kill(worker.pid, signal.SIGINT)
    assert worker.wait(timeout=60) != 0
    cfg = compose_config(*overrides, config_name="tune")
    study = load(cfg)
    stopped = study.trials[running.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs.get("interrupted")
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(queued) == 1 and queued[0].params == stopped.params
    client = MlflowClient(cfg["tracking"]["uri"])
    assert client.get_run(running.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"


@pytest.mark.slow
@pytest.mark.fresh_store  # the first `make tune` creates the store
def test_tune_pipeline_prints_the_retrain_line_and_writes_the_summary(tmp_path):
    import json

    done = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "tune.py"), *tune_overrides(tmp_path, "study.n_trials=2"),
         f"paths.output_dir={tmp_path}/out"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    keys = {
        "study",
        "n_complete",
        "n_pruned",
        "n_failed",
        "best_value",
        "best_params",
        "best_overrides",
        "mlflow_parent_run_id",
    }
    assert keys <= set(summary)
    output = done.stdout + done.stderr
    assert "make train ARGS=" in output and "model.dropout.hidden=" in output
    assert output.count("trial    0 ") == 1  # one line per trial, no per-batch output
