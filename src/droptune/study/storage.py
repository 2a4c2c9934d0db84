"""Where a study lives (an RDB URL or a journal file), and how dead workers' trials are found:
heartbeats from this worker, stale trials failed and queued again."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
    fail_stale_trials,
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from droptune.optuna_internals import BatchAskStorage, storage_of, trial_id_of
from droptune.stores import sqlite_write_ahead_log

JOURNAL_HEARTBEAT = "droptune_heartbeat"


class StaleTrialHandler:
    """Runs when a trial of a dead worker is failed: closes its tracking, then re-queues it."""

    def __init__(self, max_retry: int | None, on_stale: Callable[[FrozenTrial], None]) -> None:
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.on_stale(trial)
        self.retry(study, trial)


def _engine_options(study: Mapping[str, Any]) -> dict[str, Any]:
    url = study["storage"]
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        sqlite_write_ahead_log()
        # several processes on one file wait for each other's write lock instead of failing
        return {"connect_args": {"timeout": 60}}
    # a server shared by many workers: a small pool per worker, dropped connections noticed
    return {
        "pool_size": study["pool_size"],
        "max_overflow": 2,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }


def make_storage(study: Mapping[str, Any], on_stale: StaleTrialHandler) -> BaseStorage:
    """An RDB URL (sqlite, postgresql) or, without a scheme, a journal file on a shared filesystem."""
    url = study["storage"]
    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = _engine_options(study)
    for attempt in itertools.count():
        try:
            return BatchAskStorage(
                RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=study["heartbeat_interval"],
                    grace_period=study["grace_period"],
                    heartbeat_stale_trial_callback=on_stale,
                )
            )
        except sqlalchemy.exc.DBAPIError:
            # Workers starting together on an empty database race to create its tables; the
            # losers see "already exists" errors and find the tables there on the next try.
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())


def existing_trials(storage: BaseStorage, name: str) -> int:
    """How many trials the study of this name holds (0 before it exists)."""
    if name not in optuna.study.get_all_study_names(storage):
        return 0
    return storage.get_n_trials(storage.get_study_id_from_name(name))


class Heartbeat:
    """Records heartbeats for the trials this process is running, from a background thread.

    RDB storages keep Optuna's own heartbeat table; a journal file has none, so there the time is
    kept as a trial system attribute and `fail_stale` reads it back.
    """

    def __init__(self, storage: BaseStorage, interval: int) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def add(self, trial_id: int) -> None:
        """Beat for this trial from now on (its first beat before this returns)."""
        self._record(trial_id)
        self.trial_ids.append(trial_id)

    def _record(self, trial_id: int) -> None:
        if isinstance(self.storage, JournalStorage):
            self.storage.set_trial_system_attr(trial_id, JOURNAL_HEARTBEAT, time.time())
        else:
            self.storage.record_heartbeat(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                self._record(trial_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale(study: optuna.Study, grace_period: int, handler: StaleTrialHandler) -> None:
    """Fail (and re-queue) RUNNING trials whose worker stopped sending heartbeats."""
    storage = storage_of(study)
    if not isinstance(storage, JournalStorage):  # an RDB storage (wrapped in Optuna's cache)
        fail_stale_trials(study)
        return
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = trial.system_attrs.get(JOURNAL_HEARTBEAT, trial.datetime_start.timestamp())
        if now - last > grace_period:
            try:
                storage.set_trial_state_values(trial_id_of(trial), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it first
            handler(study, storage.get_trial(trial_id_of(trial)))
