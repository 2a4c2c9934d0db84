"""Studies: storage, sampler, pruner, budget, fingerprint, resume, and the ask/tell loop.

The loop asks trials in batches of the runner's capacity, so a runner that trains K trials in one
fit plugs in without changing it. Heartbeats are recorded here (Optuna only records them inside
`study.optimize`), and trials of dead workers are failed and re-queued with their parameters.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
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

from droptune import plots
from droptune.config import model_sites, validate
from droptune.data import Arrays
from droptune.errors import ConfigError
from droptune.fused import FusedRunner
from droptune.runner import (
    SIGNALLED,
    SequentialRunner,
    TrialSpec,
    load_data,
    splits,
)
from droptune.schema import USER_FAMILIES, SpaceEntry, default_metric
from droptune.search import apply, hydra_overrides, parse_space, suggest, with_sites
from droptune.stores import BatchAskStorage, sqlite_write_ahead_log
from droptune.tracking import StudyTracking, Tracker, mask_url

log = logging.getLogger("droptune")
# Heartbeats, TPE's `group` and fail_stale_trials are marked experimental; the ask/tell loop below
# records heartbeats itself, which is what Optuna's "use with Study.optimize" warning is about.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def study_metric(cfg: Mapping[str, Any]) -> str:
    """study.metric, or the default: val/acc_best, or the CV mean with data.cv_folds."""
    return default_metric(cfg["study"]["metric"], bool(cfg["data"]["cv_folds"]))


class AskTellGridSampler(optuna.samplers.GridSampler):
    """A GridSampler for the ask/tell loop: Optuna's calls study.stop() once the grid is used up,
    which is only allowed inside study.optimize(); the loop checks is_exhausted() instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(
    study: Mapping[str, Any], space: Mapping[str, SpaceEntry], seed: int
) -> optuna.samplers.BaseSampler:
    name, args = study["sampler"], dict(study["sampler_args"])
    if name == "tpe":
        # group=True: the multivariate TPE handles conditional entries as separate subspaces
        return optuna.samplers.TPESampler(
            **{"seed": seed, "multivariate": True, "group": True, **args}
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **args)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **args)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **args)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, **args)
    return AskTellGridSampler({n: e.grid(n) for n, e in space.items()}, seed=seed, **args)


def make_pruner(study: Mapping[str, Any], max_steps: int) -> optuna.pruners.BasePruner:
    name, args = study["pruner"], dict(study["pruner_args"])
    if name == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 1, **args})
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            **{"min_resource": 1, "max_resource": max_steps, **args}
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**args)
    return optuna.pruners.NopPruner()


class StaleTrialHandler:
    """Runs when a trial of a dead worker is failed: closes its tracking, then re-queues it."""

    def __init__(self, max_retry: int | None, on_stale: Callable[[FrozenTrial], None]) -> None:
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.on_stale(trial)
        self.retry(study, trial)


def make_storage(study: Mapping[str, Any], on_stale: StaleTrialHandler) -> BaseStorage:
    """An RDB URL (sqlite, postgresql) or, without a scheme, a journal file on a shared filesystem."""
    url = study["storage"]
    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any]
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        sqlite_write_ahead_log()
        # several processes on one file wait for each other's write lock instead of failing
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:  # a server shared by many workers: a small pool per worker, dropped connections noticed
        engine_kwargs = {
            "pool_size": study["pool_size"],
            "max_overflow": 2,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
        }
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


def fingerprint(cfg: Mapping[str, Any], raw_space: Mapping[str, Any]) -> dict[str, Any]:
    """What makes trials of one study comparable; stored with the study, checked on resume."""
    data_keys = (
        "name",
        "val_fraction",
        "test_fraction",
        "cv_folds",
        "standardize",
        "path",
        "target",
        "features",
    )
    user_model = cfg["model"]["family"] in USER_FAMILIES
    return {
        "search.space": json.loads(json.dumps(raw_space, sort_keys=True, default=str)),
        "data": {
            # None for a key its dataset does not have (MNIST holds no test fraction out)
            **{k: cfg["data"].get(k) for k in data_keys},
            # where a user's data comes from (absent for the datasets studies began with)
            **{k: cfg["data"][k] for k in ("_target_", "root") if k in cfg["data"]},
        },
        "model.family": cfg["model"]["family"],
        # a user's model is named by its target (droptune's own by family, as studies began)
        **({"model._target_": cfg["model"]["_target_"]} if user_model else {}),
        "study.metric": study_metric(cfg),
        "study.direction": cfg["study"]["direction"],
        "seed": cfg["seed"],
        "trainer.max_epochs": cfg["trainer"]["max_epochs"],
    }


def _digest(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in new
        if old.get(key) != new.get(key)
    ]


def open_study(
    cfg: Mapping[str, Any],
    raw_space: Mapping[str, Any],
    storage: BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it after checking its direction and fingerprint.

    Returns (study, created). Creation is atomic in the storage (study names are unique), so of
    many workers starting together exactly one creates it: that one also creates the MLflow parent.
    """
    s = cfg["study"]
    parts = fingerprint(cfg, raw_space)
    try:
        study = optuna.create_study(
            study_name=s["name"],
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=s["direction"],
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=s["name"], storage=storage, sampler=sampler, pruner=pruner
        )
        created = False
    if study.direction.name.lower() != s["direction"]:
        raise ConfigError(
            "study.direction",
            s["direction"],
            f"{study.direction.name.lower()}, as study {s['name']!r} was made",
        )
    stored = study.user_attrs.get("fingerprint_parts")
    if stored is not None and stored != parts:
        changes = "; ".join(_differences(stored, parts))
        if not s["allow_changes"]:
            raise ConfigError(
                "study.name",
                s["name"],
                f"a new name: this study was made with other settings ({changes}); "
                "or resume it anyway with study.allow_changes=true",
            )
        log.warning("resuming %s with changed settings: %s", s["name"], changes)
    if stored != parts:
        study.set_user_attr("fingerprint_parts", parts)
        study.set_user_attr("fingerprint", _digest(parts))
    return study, created


def fused_fits(cfg: Mapping[str, Any], arrays: Any) -> bool:
    """The fused runner stacks droptune's MLP over resident tensors; nothing else."""
    return cfg["model"]["family"] == "mlp" and isinstance(arrays, Arrays)


def parent_run_id(study: optuna.Study, created: bool, wait_s: float = 60.0) -> str | None:
    """The MLflow parent run of a study: set by the worker that created it. Others wait for it
    (briefly: if that worker died first, None lets the caller find or create it by its tags)."""
    deadline = time.monotonic() + (0 if created else wait_s)
    while True:
        known = study.user_attrs.get("mlflow_parent_run_id")
        if known or time.monotonic() >= deadline:
            return known
        time.sleep(0.5)


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished, running or queued trials count; a FAIL counts only if the trial itself failed
    (NaN, OOM, error), not when its worker died, was interrupted, or it was over budget."""
    if trial.state == TrialState.FAIL:
        return "fail_reason" in trial.user_attrs
    return True


def budget_used(study: optuna.Study, before_number: int | None = None) -> int:
    return _budget_of(study.get_trials(deepcopy=False), before_number)


def _budget_of(trials: Sequence[FrozenTrial], before_number: int | None = None) -> int:
    return sum(
        counts_toward_budget(t) for t in trials if before_number is None or t.number < before_number
    )


JOURNAL_HEARTBEAT = "droptune_heartbeat"


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
    storage = study._storage
    if not isinstance(storage, JournalStorage):  # an RDB storage (wrapped in Optuna's cache)
        fail_stale_trials(study)
        return
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = trial.system_attrs.get(JOURNAL_HEARTBEAT, trial.datetime_start.timestamp())
        if now - last > grace_period:
            try:
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it first
            handler(study, storage.get_trial(trial._trial_id))


def exit_on_signals() -> None:
    """SIGTERM (SLURM preemption, time limit) and SIGINT (Ctrl-C) raise SystemExit, so the running
    trial is failed, queued again and its MLflow run closed, instead of the process vanishing
    mid-write. Python only prints an exception raised while a finaliser runs; the signal is kept,
    so the next epoch start raises it again (raise_if_signalled)."""

    def _exit(signum: int, frame: object) -> None:
        SIGNALLED.append(signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)


# ---- the loop -----------------------------------------------------------------------------------

# Which process ran a trial: host, pid and, under SLURM, the job (array) id.
WORKER = ":".join(
    filter(None, [socket.gethostname(), str(os.getpid()), os.environ.get("SLURM_JOB_ID")])
)
NOT_RETRAIN_KEYS = ("study", "search", "hydra", "~hydra", "paths.output_dir")


def retrain_base(choices: Mapping[str, Any], cli_overrides: Sequence[str]) -> list[str]:
    """The tune command's own choices and overrides that `make train` needs to rebuild a trial."""
    groups = [
        f"{g}={choices[g]}"
        for g in ("data", "model", "optim", "trainer", "experiment")
        if choices.get(g)
    ]
    chosen = {g.split("=")[0] for g in groups}
    kept = [
        o
        for o in cli_overrides
        if not o.lstrip("+~").startswith(NOT_RETRAIN_KEYS) and o.split("=")[0] not in chosen
    ]
    return groups + kept


def _existing_trials(storage: BaseStorage, name: str) -> int:
    if name not in optuna.study.get_all_study_names(storage):
        return 0
    return storage.get_n_trials(storage.get_study_id_from_name(name))


def _best(study: optuna.Study, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: t.value) if complete else None


def _finished_line(
    study: optuna.Study, trials: Sequence[FrozenTrial], trial: FrozenTrial, metric: str, budget: int
) -> str:
    """The log line of a finished trial; `trials`: the study as read once after its batch."""
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    value = (
        f"{metric} {trial.value:.4f}"
        if trial.value is not None
        else trial.user_attrs.get("fail_reason", "")
    )
    best = _best(study, trials)
    return (
        f"trial {trial.number:4d} {trial.state.name:8s} {value}  |  "
        f"best {f'{best.value:.4f} (#{best.number})' if best else '-'}  |  "
        f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{sum(counts_toward_budget(t) for t in trials if t.state == TrialState.FAIL)} failed"
        f"  |  {_budget_of(trials)}/{budget}"
    )


def optimize(
    cfg: Mapping[str, Any],
    choices: Mapping[str, Any] | None = None,
    cli_overrides: Sequence[str] = (),
    arrays: Arrays | None = None,
) -> dict[str, Any]:
    """Start or resume the study the config describes; returns the summary (also summary.json).

    `arrays` replaces loading data.name (a benchmark's synthetic data, a library caller's own).
    """
    cfg = validate(cfg)
    s, metric = cfg["study"], study_metric(cfg)
    arrays = arrays if arrays is not None else load_data(cfg)
    folds = splits(cfg, arrays)
    found = model_sites(cfg["model"], arrays.input_shape, len(arrays.classes)).sites
    raw_space = with_sites(cfg["search"], [site.path for site in found])
    space = parse_space(raw_space, cfg)
    t = cfg["tracking"]
    tracking = StudyTracking(Tracker(t["uri"], t["experiment"], t["artifact_root"]))
    handler = StaleTrialHandler(
        s["max_retry"],
        lambda dead: tracking.close_dead_trial(
            dead.user_attrs.get("mlflow_run_id"), "worker stopped sending heartbeats (killed?)"
        ),
    )
    storage = make_storage(s, handler)
    sampler = make_sampler(s, space, cfg["seed"] + _existing_trials(storage, s["name"]))
    pruner = make_pruner(s, len(folds) if len(folds) > 1 else cfg["trainer"]["max_epochs"])
    study, created = open_study(cfg, raw_space, storage, sampler, pruner)
    parent = tracking.open_parent(
        s["name"],
        parent_run_id(study, created),
        created,
        {
            "study.name": s["name"],
            "study.storage": mask_url(s["storage"]),
            "study.sampler": s["sampler"],
            "study.pruner": s["pruner"],
            "study.metric": metric,
            "study.direction": s["direction"],
            "study.n_trials": s["n_trials"],
            "fingerprint": study.user_attrs["fingerprint"],
            "search.name": cfg["search"]["name"],
        },
    )
    study.set_user_attr("mlflow_parent_run_id", parent)
    tracking.tracker.client.log_text(
        parent, json.dumps(raw_space, indent=2, default=str), "search_space.json"
    )
    runner = SequentialRunner(arrays, folds, metric, tracking, s["name"])
    if s["runner"] == "fused" and not fused_fits(cfg, arrays):
        log.info(
            "study.runner=fused trains droptune's MLP on resident data only: "
            "model=%s on data=%s runs on the standard runner",
            cfg["model"]["family"],
            cfg["data"]["name"],
        )
    elif s["runner"] == "fused":
        fused = s["fused"]
        runner = FusedRunner(
            fused["k"], runner, fused["compile"], fused["precision"], fused["checkpoint_interval"],
        )  # fmt: skip
    base = retrain_base(choices or {}, cli_overrides)
    stop_at = time.monotonic() + s["timeout"] if s["timeout"] else float("inf")
    log.info(
        "study %s: %d of %d trials used; %s",
        s["name"],
        budget_used(study),
        s["n_trials"],
        mask_url(s["storage"]),
    )
    error: BaseException | None = None
    waited = False
    try:
        while time.monotonic() < stop_at:
            fail_stale(study, s["grace_period"], handler)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            # queued retries are counted already: they are run, not added
            room = s["n_trials"] - budget_used(study) + states.count(TrialState.WAITING)
            if isinstance(sampler, AskTellGridSampler) and sampler.is_exhausted(study):
                break
            if room <= 0:
                if TrialState.RUNNING not in states:
                    break
                # Others' last trials: stay until they finish, or their worker is found dead
                # and its trial queued again for us.
                if not waited:
                    log.info(
                        "budget taken; waiting for %d running trial(s)",
                        states.count(TrialState.RUNNING),
                    )
                    waited = True
                time.sleep(s["heartbeat_interval"])
                continue
            asked: list[optuna.Trial] = []
            batch: list[TrialSpec] = []
            # a trial beats from its ask on, so that one whose worker dies at any point is retried
            with Heartbeat(storage, s["heartbeat_interval"]) as heartbeat:
                try:
                    size = min(room, runner.capacity)
                    batch = _ask_batch(study, heartbeat, asked, size, cfg, space, base, len(folds))
                    if batch:
                        runner.run(batch)  # it tells each trial's end as it happens
                except BaseException:
                    _requeue_interrupted(study, asked, handler)
                    raise
            if not batch:
                break
            trials = study.get_trials(deepcopy=False)  # once per batch: each read reloads
            for spec in batch:  # every running trial from the storage
                finished = trials[spec.trial.number]
                log.info("%s", _finished_line(study, trials, finished, metric, s["n_trials"]))
            _log_progress(study, trials, tracking, max(spec.trial.number for spec in batch))
    except BaseException as caught:
        error = caught
        raise
    finally:
        try:
            plots.log_study_plots(study, tracking, Path(cfg["paths"]["output_dir"]) / "plots")
        except Exception:  # a plot must never cost the study's result
            log.warning("study plots failed", exc_info=True)
        tracking.close_parent(error)
    summary = _summary(study, parent, tracking)
    out = Path(cfg["paths"]["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _ask_batch(
    study: optuna.Study,
    heartbeat: Heartbeat,
    asked: list[optuna.Trial],
    size: int,
    cfg: Mapping[str, Any],
    space: Mapping[str, SpaceEntry],
    base: Sequence[str],
    n_folds: int,
) -> list[TrialSpec]:
    """Up to `size` sampled trials, each beating from its ask on and appended to `asked` at once
    (so an interrupt can queue it again). Stops at a trial that another worker's ask made over
    the budget: that one is failed, not run."""
    s, storage = cfg["study"], study._storage
    batch = []
    with storage.batch() if isinstance(storage, BatchAskStorage) else nullcontext():
        for _ in range(size):
            trial = study.ask()
            asked.append(trial)
            heartbeat.add(trial._trial_id)
            # only trials numbered below it count before it: a low number needs no read
            if (
                trial.number >= s["n_trials"]
                and budget_used(study, before_number=trial.number) >= s["n_trials"]
            ):
                trial.set_user_attr("over_budget", True)  # another worker took the last slot
                study.tell(trial, state=TrialState.FAIL)
                break
            overrides = suggest(trial, space)
            config = apply(cfg, overrides)
            trial.set_user_attr("overrides", [*base, *hydra_overrides(config, overrides)])
            trial.set_user_attr("worker", WORKER)
            batch.append(TrialSpec(trial, config, _checkpoint(s, storage, trial, n_folds)))
    return batch


def _checkpoint(
    s: Mapping[str, Any], storage: BaseStorage, trial: optuna.Trial, n_folds: int
) -> Path | None:
    """Per-trial checkpoint path; a retry uses the one of the trial it retries (its lineage)."""
    if not s["checkpoint_dir"] or n_folds > 1:
        return None
    lineage = storage.get_trial_system_attrs(trial._trial_id).get("failed_trial", trial.number)
    return Path(s["checkpoint_dir"]) / f"trial_{lineage}" / "last.ckpt"


def _requeue_interrupted(
    study: optuna.Study, asked: Sequence[optuna.Trial], handler: StaleTrialHandler
) -> None:
    """Ctrl-C / SIGTERM while a batch is asked, run or told: fail its running trials (not
    counted) and queue them again."""
    storage = study._storage  # one trial a read: a study read reloads every running trial
    for trial in asked:
        if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            handler(study, storage.get_trial(trial._trial_id))


def _log_progress(
    study: optuna.Study, trials: Sequence[FrozenTrial], tracking: StudyTracking, step: int
) -> None:
    progress = {
        "study/n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "study/n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "study/n_failed": sum(
            t.state == TrialState.FAIL and counts_toward_budget(t) for t in trials
        ),
    }
    best = _best(study, trials)
    if best:
        progress["study/best_value"] = best.value
    tracking.log_study(progress, step)


def _summary(study: optuna.Study, parent: str, tracking: StudyTracking) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    has_best = any(t.state == TrialState.COMPLETE for t in trials)
    best = study.best_trial if has_best else None
    return {
        "study": study.study_name,
        "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL and counts_toward_budget(t) for t in trials),
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "best_params": best.params if best else None,
        "best_overrides": best.user_attrs.get("overrides") if best else None,
        "best_test_acc": best.user_attrs.get("test_acc") if best else None,
        "mlflow_parent_run_id": parent,
        "mlflow_experiment_id": tracking.tracker.experiment_id,
        "fingerprint": study.user_attrs.get("fingerprint"),
    }
