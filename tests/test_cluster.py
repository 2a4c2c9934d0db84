"""Many workers on one study, for real: PostgreSQL and an MLflow server on 127.0.0.1, worker
processes killed with SIGKILL and SIGTERM, the journal file, and SQLite shared by two processes."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from droptune.study.budget import budget_used, counts_toward_budget
from tests.helpers import REPO, compose_config
from tests.launch import Launched

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# the standard runner: auto would stack these small trials on a CPU (one batch per worker)
FAST = [
    "data=digits",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=3",
    "model.width=32",
    "study.runner=standard",
]
SLOW = [
    "study.runner=standard",
    "data=digits",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=80",
    "model.width=32",
    "study.pruner=none",
]
BEAT = ["study.heartbeat_interval=1", "study.grace_period=4"]


class Workers:
    """Worker processes of one study, as a cluster would start them."""

    def __init__(
        self, tmp_path: Path, name: str, storage: str, tracking_uri: str | None, *overrides: str
    ):
        self.tmp_path, self.name, self.storage = tmp_path, name, storage
        self.env = dict(os.environ, OMP_NUM_THREADS="1", DROPTUNE_STORAGE=storage)
        study = (
            "study=journal"
            if "://" not in storage
            else ("study=sqlite" if storage.startswith("sqlite") else "study=postgres")
        )
        tracking = []
        if tracking_uri:
            self.env["MLFLOW_TRACKING_URI"] = tracking_uri
            tracking = ["tracking=server"]
        self.tracking_uri = tracking_uri or f"sqlite:///{tmp_path}/mlruns/mlflow.db"
        self.overrides = [
            study, *tracking, f"study.storage={storage}" if "://" not in storage else "",
            f"study.storage={storage}" if storage.startswith("sqlite") else "",
            f"paths.root_dir={tmp_path}", f"study.name={name}", *overrides,
        ]  # fmt: skip
        self.overrides = [o for o in self.overrides if o]
        self.processes: list[Launched] = []

    def start(self, n: int = 1, *extra: str) -> list[Launched]:
        started = []
        for _ in range(n):
            log = self.tmp_path / f"worker-{len(self.processes) + len(started)}.log"
            tune = [str(REPO / "pipelines" / "tune.py"), *self.overrides, *extra]
            started.append(Launched(tune, env=self.env, stdout=log))
        self.processes += started
        return started

    def wait(self, timeout: float = 400) -> None:
        for process in self.processes:
            assert process.wait(timeout=timeout) is not None
        logs = "\n".join(p.read_text()[-1500:] for p in self.tmp_path.glob("worker-*.log"))
        assert all(p.returncode in (0, -9, 143) for p in self.processes), logs

    def study(self) -> optuna.Study:
        storage = self.storage
        if "://" not in storage:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            storage = JournalStorage(JournalFileBackend(storage))
        return optuna.load_study(study_name=self.name, storage=storage)

    def running_with_checkpoint(self, timeout: float = 180) -> optuna.trial.FrozenTrial:
        """Wait until a trial is RUNNING and its first epoch checkpoint is on disk."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                trials = self.study().trials
            except Exception:  # not created yet
                continue
            for trial in trials:
                lineage = trial.system_attrs.get("failed_trial", trial.number)
                saved = (
                    self.tmp_path
                    / "outputs"
                    / "checkpoints"
                    / self.name
                    / f"trial_{lineage}"
                    / "last.ckpt"
                )
                if (
                    trial.state == TrialState.RUNNING
                    and "mlflow_run_id" in trial.user_attrs
                    and saved.exists()
                ):
                    return trial
        pytest.fail("no trial got to its first checkpoint")

    def check_budget(self, budget: int) -> optuna.Study:
        study = self.study()
        trials = study.trials
        assert budget_used(study) == budget
        assert len({t.number for t in trials}) == len(trials)
        finished = [
            t
            for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and counts_toward_budget(t))
        ]
        assert len(finished) == budget
        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name("droptune-digits")
        parents = client.search_runs(
            [experiment.experiment_id],
            f"tags.droptune_study = '{self.name}' and tags.droptune_role = 'study'",
        )
        assert len(parents) == 1  # one parent, however many workers started together
        children = client.search_runs(
            [experiment.experiment_id],
            f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'",
            max_results=1000,
        )
        assert {r.data.tags["trial_number"] for r in children} >= {str(t.number) for t in finished}
        assert not [r for r in children if r.info.status == "RUNNING"]
        return study


def test_four_workers_started_together_finish_exactly_the_budget(postgres, mlflow_server, tmp_path):
    workers = Workers(
        tmp_path,
        "four",
        postgres.create_database("four"),
        mlflow_server.url,
        *FAST,
        "study.n_trials=12",
    )
    workers.start(4)
    workers.wait()
    study = workers.check_budget(12)
    assert len({t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}) > 1
    client = MlflowClient(mlflow_server.url)
    children = client.search_runs(
        [client.get_experiment_by_name("droptune-digits").experiment_id],
        "tags.droptune_study = 'four' and tags.droptune_role = 'trial'",
    )
    assert len(children) == 12
    assert "secret" not in str(
        client.get_run(children[0].info.run_id).data.params
    )  # password masked


def test_sigkill_mid_trial_is_retried_from_its_checkpoint(postgres, mlflow_server, tmp_path):
    workers = Workers(
        tmp_path,
        "kill",
        postgres.create_database("kill"),
        mlflow_server.url,
        *SLOW,
        *BEAT,
        "study.n_trials=2",
    )
    victim, survivor = workers.start(2)
    dead = workers.running_with_checkpoint()
    owner = victim if dead.user_attrs["worker"].split(":")[1] == str(victim.pid) else survivor
    time.sleep(1.5)  # a few more epochs
    owner.send_signal(signal.SIGKILL)
    workers.wait()
    study = workers.check_budget(2)
    killed = study.trials[dead.number]
    assert killed.state == TrialState.FAIL and "fail_reason" not in killed.user_attrs
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["resumed_from_epoch"] >= 1  # started from the saved epoch, not from 0
    assert (
        MlflowClient(mlflow_server.url).get_run(dead.user_attrs["mlflow_run_id"]).info.status
        == "KILLED"
    )


def test_sigterm_checkpoints_exits_and_the_next_worker_recovers_the_trial(
    postgres, mlflow_server, tmp_path
):
    workers = Workers(
        tmp_path,
        "term",
        postgres.create_database("term"),
        mlflow_server.url,
        *SLOW,
        *BEAT,
        "study.n_trials=2",
    )
    (worker,) = workers.start(1)
    running = workers.running_with_checkpoint()
    time.sleep(1.0)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 143
    checkpoint = (
        tmp_path / "outputs" / "checkpoints" / "term" / f"trial_{running.number}" / "last.ckpt"
    )
    assert checkpoint.exists()
    stopped = workers.study().trials[running.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"]
    assert (
        MlflowClient(mlflow_server.url).get_run(running.user_attrs["mlflow_run_id"]).info.status
        == "KILLED"
    )
    n_before = len(workers.study().trials)

    workers.start(
        1
    )  # as SLURM would requeue it: resumes the study, finishes the remaining budget only
    workers.wait()
    study = workers.check_budget(2)
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == running.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 1
    assert len(study.trials) == n_before + 1  # the queued retry and one new trial; nothing more
    assert not checkpoint.parent.exists()


def test_journal_storage_with_two_workers(tmp_path, mlflow_server):
    workers = Workers(
        tmp_path,
        "journal",
        str(tmp_path / "shared" / "journal.log"),
        mlflow_server.url,
        *FAST,
        "study.n_trials=6",
    )
    workers.start(2)
    workers.wait()
    workers.check_budget(6)


@pytest.mark.fresh_store  # workers racing to create the store
def test_sqlite_shared_by_two_processes_waits_for_its_lock(tmp_path):
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    workers = Workers(tmp_path, "lite", storage, None, *FAST, "study.n_trials=6")
    workers.start(2)
    workers.wait()
    study = workers.check_budget(6)
    # a worker that waited for the other's last trial exited soon after it, not a heartbeat later
    last_end = max(t.datetime_complete for t in study.trials)
    heartbeat = compose_config(*workers.overrides, config_name="tune")["study"][
        "heartbeat_interval"
    ]
    assert (datetime.now() - last_end).total_seconds() < heartbeat / 2
