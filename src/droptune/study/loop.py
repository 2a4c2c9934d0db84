"""The ask/tell loop: start or resume a study, then ask trials in batches of the runner's capacity
until the total budget is used, telling each trial the moment it ends.

A runner that trains K trials in one fit plugs in without changing the loop. Every trial beats
from its ask on (study/storage.py), so one whose worker dies at any point is failed and queued
again with its parameters; Ctrl-C or SIGTERM queues this worker's own open trials again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from droptune import plots
from droptune.build import model_sites
from droptune.config import validate
from droptune.config.tune import SpaceEntry
from droptune.data import Arrays
from droptune.fused.runner import FusedRunner
from droptune.inputs import Data, Split, load_data, splits
from droptune.mlflow_ui import save_study_view, study_view
from droptune.optuna_internals import BatchAskStorage, storage_of, trial_id_of
from droptune.quiet import quiet_libraries
from droptune.search import apply, enqueued, hydra_overrides, parse_space, suggest, with_sites
from droptune.study.budget import (
    budget_of,
    budget_used,
    finished_lines,
    front_of,
    log_progress,
    summary,
)
from droptune.study.objectives import Objectives, objectives_of
from droptune.study.progress import StudyProgress
from droptune.study.resume import open_study, parent_run_id
from droptune.study.runners import build_runner
from droptune.study.samplers import AskTellGridSampler, make_pruner, make_sampler
from droptune.study.storage import (
    Heartbeat,
    StaleTrialHandler,
    existing_trials,
    fail_stale,
    make_storage,
)
from droptune.tracked_data import dataset_input
from droptune.tracking import StudyTracking, Tracker, mask_url, system_metrics
from droptune.trials.lifecycle import TrialContext, TrialLifecycle, TrialSpec
from droptune.trials.standard import StandardRunner

log = logging.getLogger("droptune")

# a worker whose budget is taken looks again this often (a heartbeat apart at most): it exits
# soon after the last trial ends; each look is two reads (stale trials, then the trials' states)
WAIT_POLL_S = 2.0
NOT_RETRAIN_KEYS = ("study", "search", "hydra", "~hydra", "paths.output_dir")
RETRAIN_GROUPS = ("data", "model", "optim", "trainer", "experiment")  # what a trial's line names


@dataclass
class OpenStudy:
    """A started or resumed study and everything its loop reads."""

    cfg: dict[str, Any]
    objectives: Objectives
    study: optuna.Study
    sampler: optuna.samplers.BaseSampler
    stale: StaleTrialHandler
    tracking: StudyTracking
    parent: str
    space: Mapping[str, SpaceEntry]
    n_folds: int
    retrain_base: list[str]


def retrain_base(choices: Mapping[str, Any], cli_overrides: Sequence[str]) -> list[str]:
    """The tune command's own choices and overrides that `make train` needs to rebuild a trial."""
    groups = [f"{g}={choices[g]}" for g in RETRAIN_GROUPS if choices.get(g)]
    chosen = {g.split("=")[0] for g in groups}
    kept = [
        o
        for o in cli_overrides
        if not o.lstrip("+~").startswith(NOT_RETRAIN_KEYS) and o.split("=")[0] not in chosen
    ]
    return groups + kept


def optimize(
    cfg: Mapping[str, Any],
    choices: Mapping[str, Any] | None = None,
    cli_overrides: Sequence[str] = (),
    arrays: Arrays | None = None,
) -> dict[str, Any]:
    """Start or resume the study the config describes; returns the summary (also summary.json).

    `arrays` replaces loading data.name (a benchmark's synthetic data, a library caller's own).
    """
    quiet_libraries()
    cfg = validate(cfg)
    arrays = arrays if arrays is not None else load_data(cfg)
    folds = splits(cfg, arrays)
    opened = _open(cfg, arrays, folds, retrain_base(choices or {}, cli_overrides))
    progress = _progress(cfg["study"], opened.objectives)
    lifecycle = TrialLifecycle(opened.tracking, cfg["study"]["name"], progress)
    runner, choice = build_runner(cfg, TrialContext(arrays, folds, opened.objectives, lifecycle))
    runner_name = "fused" if choice.fused else "standard"
    opened.tracking.tracker.set_tags(
        opened.parent, {"runner": runner_name, "runner_reason": choice.reason}
    )
    log.info("runner: %s (%s)", runner_name, choice.reason)
    error: BaseException | None = None
    try:
        t = cfg["tracking"]
        with (
            system_metrics(t["uri"], opened.parent, t["system_metrics"]),
            progress or nullcontext(),
        ):
            _loop(opened, runner, progress)
    except BaseException as caught:
        error = caught
        raise
    finally:
        try:
            output_dir = Path(cfg["paths"]["output_dir"])
            plots.log_study_plots(opened.study, opened.tracking, output_dir / "plots")
            _log_front(opened)
        except Exception:  # a plot must never cost the study's result
            log.warning("study plots failed", exc_info=True)
        opened.tracking.close_parent(error)
    result = summary(opened.study, opened.objectives, opened.parent, opened.tracking)
    out = Path(cfg["paths"]["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def _log_front(opened: OpenStudy) -> None:
    """A multi-objective study's Pareto trials, as pareto_front.json on its parent run."""
    if opened.objectives.multi:
        front = front_of(opened.objectives, opened.study.get_trials(deepcopy=False))
        opened.tracking.tracker.client.log_dict(opened.parent, front, "pareto_front.json")


def _pruner(
    s: Mapping[str, Any], objectives: Objectives, max_steps: int
) -> optuna.pruners.BasePruner:
    """study.pruner's pruner; none for several objectives, said once when one was asked for."""
    if objectives.multi and s["pruner"] != "none":
        log.warning(
            "study.pruner=%s is off: Optuna's pruners judge one objective, and this study has "
            "%d (%s); every trial runs to its last epoch",
            s["pruner"],
            len(objectives.metrics),
            ", ".join(objectives.metrics),
        )
        return optuna.pruners.NopPruner()
    return make_pruner(s, max_steps)


def _open(cfg: dict[str, Any], arrays: Data, folds: Sequence[Split], base: list[str]) -> OpenStudy:
    """The study (created or resumed, fingerprint checked), its sampler and its MLflow parent."""
    s, t = cfg["study"], cfg["tracking"]
    objectives = objectives_of(cfg)
    found = model_sites(cfg["model"], arrays.input_shape, len(arrays.classes)).sites
    raw_space = with_sites(cfg["search"], found)
    space = parse_space(raw_space, cfg)
    first_trials = enqueued(cfg["search"]["enqueue"] or [], space)
    n_folds = len(folds)
    tracker = Tracker(t["uri"], t["experiment"], t["artifact_root"])
    tracking = StudyTracking(tracker, dataset_input(cfg["data"], arrays, folds))
    stale = StaleTrialHandler(
        s["max_retry"],
        lambda dead: tracking.close_dead_trial(
            dead.user_attrs.get("mlflow_run_id"), "worker stopped sending heartbeats (killed?)"
        ),
    )
    storage = make_storage(s, stale)
    sampler = make_sampler(s, space, cfg["seed"] + existing_trials(storage, s["name"]))
    pruner = _pruner(s, objectives, n_folds if n_folds > 1 else cfg["trainer"]["max_epochs"])
    study, created = open_study(cfg, raw_space, storage, sampler, pruner)
    for params in first_trials if created else []:  # one worker creates it: queued once
        study.enqueue_trial(params)
    info = {
        "study.name": s["name"],
        "study.storage": mask_url(s["storage"]),
        "study.sampler": s["sampler"],
        "study.pruner": s["pruner"],
        "study.objectives" if objectives.multi else "study.metric": ", ".join(objectives.metrics),
        "study.direction": ", ".join(objectives.directions),
        "study.n_trials": s["n_trials"],
        "fingerprint": study.user_attrs["fingerprint"],
        "search.name": cfg["search"]["name"],
    }
    parent = tracking.open_parent(s["name"], parent_run_id(study, created), created, info)
    study.set_user_attr("mlflow_parent_run_id", parent)
    view = study_view(
        study_name=s["name"],
        metrics=objectives.metrics,
        maximize=objectives.directions[0] == "maximize",
        param_names=list(space),
    )
    save_study_view(tracker.client, tracker.experiment_id, s["name"], view)
    space_json = json.dumps(raw_space, indent=2, default=str)
    tracking.tracker.client.log_text(parent, space_json, "search_space.json")
    log.info(
        "study %s: %d of %d trials used; %s",
        s["name"],
        budget_used(study),
        s["n_trials"],
        mask_url(s["storage"]),
    )
    return OpenStudy(cfg, objectives, study, sampler, stale, tracking, parent, space, n_folds, base)


def _progress(s: Mapping[str, Any], objectives: Objectives) -> StudyProgress | None:
    """A live line on a terminal, a log line every study.progress seconds elsewhere, or none."""
    if s["progress"] is None:
        return None
    return StudyProgress(
        budget=s["n_trials"],
        objectives=objectives,
        interval=s["progress"],
        live=sys.stdout.isatty(),
    )


def _room(opened: OpenStudy, waited: bool) -> int | None:
    """How many trials this worker may ask now: None when the study is done, 0 while the budget
    is taken but others' trials still run (they may die and be queued again for us)."""
    s, study = opened.cfg["study"], opened.study
    if isinstance(opened.sampler, AskTellGridSampler) and opened.sampler.is_exhausted(study):
        return None
    trials = study.get_trials(deepcopy=False)  # one read: each reloads every running trial
    states = [t.state for t in trials]
    # queued retries are counted already: they are run, not added
    room = s["n_trials"] - budget_of(trials) + states.count(TrialState.WAITING)
    if room > 0:
        return room
    if TrialState.RUNNING not in states:
        return None
    if not waited:
        log.info("budget taken; waiting for %d running trial(s)", states.count(TrialState.RUNNING))
    return 0


def _loop(
    opened: OpenStudy, runner: StandardRunner | FusedRunner, progress: StudyProgress | None
) -> None:
    s, study = opened.cfg["study"], opened.study
    stop_at = time.monotonic() + s["timeout"] if s["timeout"] else float("inf")
    waited = False
    if progress is not None:
        progress.sync(study.get_trials(deepcopy=False))
    while time.monotonic() < stop_at:
        fail_stale(study, s["grace_period"], opened.stale)
        room = _room(opened, waited)
        if room is None:
            return
        if room == 0:
            waited = True
            time.sleep(min(s["heartbeat_interval"], WAIT_POLL_S))
            continue
        asked: list[optuna.Trial] = []
        batch: list[TrialSpec] = []
        # a trial beats from its ask on, so that one whose worker dies at any point is retried
        with Heartbeat(storage_of(study), s["heartbeat_interval"]) as heartbeat:
            try:
                batch = _ask_batch(opened, heartbeat, asked, min(room, runner.capacity))
                if batch:
                    runner.run(batch)  # it tells each trial's end as it happens
            except BaseException:
                _requeue_interrupted(study, asked, opened.stale)
                raise
        if not batch:
            return
        # once per batch: each read reloads every running trial from the storage
        trials = study.get_trials(deepcopy=False)
        numbers = [spec.trial.number for spec in batch]
        for line in finished_lines(opened.objectives, trials, numbers, s["n_trials"]):
            log.info("%s", line)
        log_progress(opened.objectives, trials, opened.tracking, max(numbers))
        if progress is not None:
            progress.sync(trials)


def _worker() -> str:
    """Which process runs a trial: host, pid and, under SLURM, the job (array) id. Read at each
    ask, not at import: a process forked after the import has a pid of its own."""
    return ":".join(
        filter(None, [socket.gethostname(), str(os.getpid()), os.environ.get("SLURM_JOB_ID")])
    )


def _ask_batch(
    opened: OpenStudy, heartbeat: Heartbeat, asked: list[optuna.Trial], size: int
) -> list[TrialSpec]:
    """Up to `size` sampled trials, each beating from its ask on and appended to `asked` at once
    (so an interrupt can queue it again). Stops at a trial that another worker's ask made over
    the budget: that one is failed, not run."""
    cfg, study = opened.cfg, opened.study
    n_trials, storage = cfg["study"]["n_trials"], storage_of(study)
    batch = []
    with storage.batch() if isinstance(storage, BatchAskStorage) else nullcontext():
        for _ in range(size):
            trial = study.ask()
            asked.append(trial)
            heartbeat.add(trial_id_of(trial))
            # only trials numbered below it count before it: a low number needs no read
            if trial.number >= n_trials and budget_used(study, trial.number) >= n_trials:
                trial.set_user_attr("over_budget", True)  # another worker took the last slot
                study.tell(trial, state=TrialState.FAIL)
                break
            overrides = suggest(trial, opened.space)
            config = apply(cfg, overrides)
            hydra = hydra_overrides(config, overrides)
            trial.set_user_attr("overrides", [*opened.retrain_base, *hydra])
            trial.set_user_attr("worker", _worker())
            batch.append(TrialSpec(trial, config, _checkpoint(opened, trial)))
    return batch


def _checkpoint(opened: OpenStudy, trial: optuna.Trial) -> Path | None:
    """Per-trial checkpoint path; a retry uses the one of the trial it retries (its lineage)."""
    folder = opened.cfg["study"]["checkpoint_dir"]
    if not folder:  # a k-fold trial: the fused runner's folds save, the standard's refit
        return None
    attrs = storage_of(opened.study).get_trial_system_attrs(trial_id_of(trial))
    return Path(folder) / f"trial_{attrs.get('failed_trial', trial.number)}" / "last.ckpt"


def _requeue_interrupted(
    study: optuna.Study, asked: Sequence[optuna.Trial], stale: StaleTrialHandler
) -> None:
    """Ctrl-C / SIGTERM while a batch is asked, run or told: fail its running trials (not
    counted) and queue them again."""
    storage = storage_of(study)  # one trial a read: a study read reloads every running trial
    for trial in asked:
        if storage.get_trial(trial_id_of(trial)).state == TrialState.RUNNING:
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            stale(study, storage.get_trial(trial_id_of(trial)))
