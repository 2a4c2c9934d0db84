"""MLflow: one client, explicit run ids and run states (no global active run), config as params.

Lightning's MLFlowLogger is not used: it steps metrics by optimizer step and ends runs with its own
status, where a study needs epoch steps and the trial's own state (COMPLETE / PRUNED / FAIL).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy
import yaml
from mlflow.entities import DatasetInput, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import droptune
from droptune.describe import config_label
from droptune.mlflow_ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from droptune.stores import sqlite_write_ahead_log

PARAM_BATCH = 100  # MLflow's limit of params per log_batch call
# libyaml's emitter where PyYAML was built with it: a trial's config.yaml in a tenth of the time
YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def param_key(name: str) -> str:
    """A name MLflow takes as a key: site globs (`model.dropout.sites.enc*`) have characters it
    refuses, shown as `_` (the config.yaml artifact keeps them)."""
    return re.sub(r"[^\w./\- ]", "_", name)


def mask_url(url: str) -> str:
    """A database URL with its password hidden, for logs, MLflow and summaries."""
    if "://" not in url or "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def masked(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with every storage / tracking URL's password hidden."""
    return {
        k: masked(v)
        if isinstance(v, Mapping)
        else (mask_url(v) if k in ("storage", "uri") and isinstance(v, str) else v)
        for k, v in config.items()
    }


def git_commit(directory: str | Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@contextlib.contextmanager
def _store_init_lock(uri: str):
    """Processes on one machine open a SQLite store one at a time: MLflow creates and migrates its
    tables on first open, and two processes doing that at once corrupt the migration."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Tracker:
    """An MLflow experiment on one tracking store."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | None = None) -> None:
        self.uri = uri
        if uri.startswith("sqlite:///"):
            sqlite_write_ahead_log()
        with _store_init_lock(uri):
            for attempt in range(6):
                try:
                    self.client = MlflowClient(tracking_uri=uri)
                    self.experiment_id = self._experiment_id(experiment, artifact_root)
                    break
                except (MlflowException, sqlalchemy.exc.DBAPIError):
                    # Workers opening a new database store together race to create its tables;
                    # the losers find them made a moment later.
                    if attempt == 5:
                        raise
                    time.sleep(1.0 + random.random())

    def _experiment_id(self, name: str, artifact_root: str | None) -> str:
        """The experiment's id (created where missing), marked as model training for the UI."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = str(Path(artifact_root) / name) if artifact_root else None
            try:
                return self.client.create_experiment(
                    name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            except MlflowException:  # another process created it first
                found = self.client.get_experiment_by_name(name)
        if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self.client.set_experiment_tag(
                found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )
        return found.experiment_id

    def start_run(
        self, run_name: str, tags: Mapping[str, Any], parent_run_id: str | None = None
    ) -> str:
        all_tags = {k: str(v) for k, v in tags.items()}
        all_tags["droptune_version"] = droptune.__version__
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        return run.info.run_id

    def log_dataset(self, run_id: str, dataset: DatasetInput | None) -> None:
        if dataset is not None:
            self.client.log_inputs(run_id, datasets=[dataset])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params in as few writes as MLflow's limit allows (a write costs far more than a row)."""
        items = [Param(param_key(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=items[start : start + PARAM_BATCH])

    def log_config(
        self, run_id: str, config: Mapping[str, Any], params: Mapping[str, Any] | None = None
    ) -> None:
        """Flattened resolved config as params (`params` in the same writes), and the whole of it
        as config.yaml (passwords masked)."""
        config = masked(config)
        self.log_params(run_id, {**(params or {}), **flatten(config)})
        text = yaml.dump(dict(config), Dumper=YAML_DUMPER, sort_keys=False)
        self.client.log_text(run_id, text, "config.yaml")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_history(run_id, [(step, metrics)])

    def log_history(
        self,
        run_id: str,
        steps: Sequence[tuple[int, Mapping[str, float]]],
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Several steps' metrics (and tags) in one write (a write costs far more than a row)."""
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step) for step, metrics in steps for k, v in metrics.items()
        ]
        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        self.client.log_batch(run_id, metrics=batch, tags=run_tags)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.log_history(run_id, [], tags)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(
            run_id, status=RunStatus.to_string(RunStatus.from_string(status))
        )


class StudyTracking:
    """One study = one parent run; one child run per trial, nested under it, ended with its state.

    The parent's run id is kept in the Optuna study (user attr) and as tags on the run, so a resumed
    study, or another process working on it, nests its trials under the same parent. `dataset`:
    what every run of the study trains on (tracked_data.dataset_input).
    """

    def __init__(self, tracker: Tracker, dataset: DatasetInput | None = None) -> None:
        self.tracker = tracker
        self.dataset = dataset
        self.parent_run_id: str | None = None

    def open_parent(
        self, study_name: str, known_run_id: str | None, create: bool, info: Mapping[str, Any]
    ) -> str:
        """Reuse the study's parent run (reopened as RUNNING) or, for the study's creator (or when
        none can be found), create it; returns its id."""
        client = self.tracker.client
        run_id = known_run_id
        if run_id is None and not create:
            found = client.search_runs(
                [self.tracker.experiment_id],
                filter_string=f"tags.droptune_study = '{study_name}' and tags.droptune_role = 'study'",
                order_by=["attributes.start_time ASC"],
                max_results=1,
            )
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            run_id = self.tracker.start_run(
                f"study {study_name}", {"droptune_study": study_name, "droptune_role": "study"}
            )
            self.tracker.log_params(run_id, info)
            self.tracker.log_dataset(run_id, self.dataset)
        else:
            client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

    def start_trial(
        self,
        number: int,
        params: Mapping[str, Any],
        config: Mapping[str, Any],
        study_name: str,
        sites: Mapping[str, Any] | None = None,
    ) -> str:
        """The trial's run, named by what it tries: its sampled params (trial.*), the config,
        `sites` (site.*: the rate each dropout site really trains with) and the dataset."""
        run_id = self.tracker.start_run(
            f"trial {number} · {config_label(config, sites or {})}",
            {
                "droptune_study": study_name,
                "droptune_role": "trial",
                "trial_number": number,
                "state": "RUNNING",
                "dataset": config["data"]["name"],
                "model": config["model"]["family"],
            },
            parent_run_id=self.parent_run_id,
        )
        trial_params = {f"trial.{k}": v for k, v in params.items()}
        self.tracker.log_config(run_id, config, {**trial_params, **(sites or {})})
        self.tracker.log_dataset(run_id, self.dataset)
        return run_id

    def finish_trial(
        self, run_id: str, state: str, reason: str | None, metrics: Mapping[str, float], step: int
    ) -> None:
        """state is Optuna's (COMPLETE / PRUNED / FAIL); a pruned run ends FINISHED, not failed."""
        finite = {k: v for k, v in metrics.items() if v == v and abs(v) != float("inf")}
        tags = {"state": state} | ({"fail_reason": reason[:5000]} if reason else {})
        self.tracker.log_history(run_id, [(step, finite)], tags)
        self.tracker.end_run(run_id, "FAILED" if state == "FAIL" else "FINISHED")

    def close_dead_trial(self, run_id: str | None, reason: str) -> None:
        """A trial whose worker died or was stopped: its run must not stay RUNNING."""
        if run_id is None:
            return
        self.tracker.set_tags(run_id, {"state": "FAIL", "fail_reason": reason})
        self.tracker.end_run(run_id, "KILLED")

    def log_study(self, metrics: Mapping[str, float], step: int) -> None:
        self.tracker.log_metrics(self.parent_run_id, metrics, step)

    def close_parent(self, error: BaseException | None) -> None:
        if self.parent_run_id is not None:
            self.tracker.end_run(self.parent_run_id, end_status(error))


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, interval: float | None):
    """MLflow's own sampler of CPU, memory, disk, network and, on a GPU (nvidia-ml-py), GPU
    utilisation and memory, as system/* metrics of the run while the block runs. Workers of one
    study under SLURM each log under their job id (system/job<id>/...)."""
    if interval is None:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    job = os.environ.get("SLURM_JOB_ID")
    monitor = SystemMetricsMonitor(
        run_id,
        sampling_interval=interval,
        resume_logging=True,  # a resumed study's samples continue its steps
        node_id=f"job{job}" if job else None,
        tracking_uri=uri,
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def end_status(error: BaseException | None) -> str:
    """FINISHED, or KILLED for an interrupt / SIGTERM exit, or FAILED for any other error."""
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, KeyboardInterrupt | SystemExit) else "FAILED"
