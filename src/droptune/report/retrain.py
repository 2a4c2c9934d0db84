"""Each candidate trained once per seed, as `make train` would train it, nested under the
report's MLflow run; a retrain that finished before (found by its tags) is read, not redone."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from droptune.config import validate
from droptune.config.composed import compose_config
from droptune.errors import ConfigError
from droptune.report.candidates import Candidate
from droptune.report.fused import Pending, fused_plan, train_fused
from droptune.tracking import Tracker
from droptune.train import train

log = logging.getLogger("droptune")
# test/*: absent under k-fold
SCORES = ("test/acc", "test/loss", "test/ece", "gap/acc", "val/acc_best")
CV_SCORES = ("cv/acc_mean", "cv/acc_std", "gap/acc")


@dataclass(frozen=True)
class Retrain:
    """One finished retrain: which config, which seed, what it scored, its MLflow run."""

    candidate: str
    seed: int
    metrics: dict[str, float]
    run_id: str


def seeds_of(study_seed: int, n: int) -> list[int]:
    """Fresh seeds, none the study's own: the study selected its winners on that seed's split
    and initialisation, so retraining on it would keep the selection's luck."""
    return [study_seed + 1 + i for i in range(n)]


def train_config(overrides: Sequence[str]) -> dict[str, Any]:
    """conf/train.yaml with `overrides`, as `make train ARGS=...` composes it."""
    return compose_config("train", overrides)


def with_shared(overrides: Sequence[str], shared: Sequence[str]) -> tuple[str, ...]:
    """A config's line and the report's shared overrides it does not already hold: a trial's
    line keeps the tune command's own (`+model.width=64`), and Hydra refuses an append twice."""
    return (*overrides, *(o for o in shared if o not in overrides))


def checked_configs(
    candidates: Sequence[Candidate], shared: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Every candidate's config, composed and checked before any training: a line that does
    not compose (an experiment that is not there, a misspelt key) or checks out wrong is one
    ConfigError naming the config."""
    configs = {}
    for candidate in candidates:
        try:
            configs[candidate.name] = validate(
                train_config(with_shared(candidate.overrides, shared))
            )
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError(
                f"the line of {candidate.name!r}",
                list(candidate.overrides),
                f"a `make train` line that composes ({str(error).splitlines()[0]})",
            ) from None
        except ConfigError as error:
            raise ConfigError(
                f"{error.key} (in {candidate.name!r})", error.value, error.allowed
            ) from None
    return configs


def config_key(candidate: Candidate) -> str:
    """What a retrain is reused by: its whole line, not its name (a study that gains trials may
    get a new best, and with it new baselines under the same names; a report asked for more
    epochs trains anew)."""
    return hashlib.sha256(json.dumps(candidate.overrides).encode()).hexdigest()[:16]


def finished_retrains(tracker: Tracker, report_run_id: str) -> dict[tuple[str, int], Retrain]:
    """The report's retrains that ended, by (config key, seed). Those a killed report left
    RUNNING are marked KILLED (kept, with the epochs they logged) and will be trained again."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id], f"tags.mlflow.parentRunId = '{report_run_id}'", max_results=10000
    )
    found = {}
    for run in runs:
        if run.info.status == "RUNNING":
            log.info("retrain %s was interrupted: marked KILLED, trained again", run.info.run_name)
            tracker.end_run(run.info.run_id, "KILLED")
        if run.info.status != "FINISHED":
            continue
        tags = run.data.tags
        seed = int(tags["report_seed"])
        found[(tags["report_config"], seed)] = Retrain(
            tags["report_candidate"], seed, dict(run.data.metrics), run.info.run_id
        )
    return found


def _tags(candidate: Candidate, seed: int) -> dict[str, Any]:
    """What finds a retrain again (its line and seed) and names it in the UI."""
    return {
        "droptune_role": "retrain",
        "report_candidate": candidate.name,
        "report_seed": seed,
        "report_config": config_key(candidate),
    }


def retrain_all(
    candidates: Sequence[Candidate],
    seeds: Sequence[int],
    tracker: Tracker,
    report_run_id: str,
    runner: str = "standard",
) -> list[Retrain]:
    """Every candidate once per seed. With `runner` fused (or auto where it pays) the retrains
    that can share a fit train in one, all seeds and folds together; the others one by one,
    seed-major (a killed report has every config at the same number of seeds)."""
    done = finished_retrains(tracker, report_run_id)
    by_name = {c.name: c for c in candidates}
    retrains, pending = [], []
    for seed in seeds:
        for candidate in candidates:
            found = done.get((config_key(candidate), seed))
            if found is not None:
                retrains.append(replace(found, candidate=candidate.name))
            else:
                config = validate(train_config([*candidate.overrides, f"seed={seed}"]))
                pending.append(Pending(candidate.name, seed, config))
    stacked = fused_plan(pending, runner)
    for positions in stacked:
        group = [pending[i] for i in positions]
        tags = [{**_tags(by_name[r.name], r.seed), "runner": "fused"} for r in group]
        for r, run_id in zip(group, train_fused(group, tags, tracker, report_run_id), strict=True):
            retrains.append(Retrain(r.name, r.seed, _logged(tracker, run_id), run_id))
            log.info("retrain %s · seed %d: %s (fused)", r.name, r.seed, _score(retrains[-1]))
    together = {i for positions in stacked for i in positions}
    for r in (r for i, r in enumerate(pending) if i not in together):
        r.config["tracking"]["run_name"] = f"{r.name} · seed {r.seed}"
        summary = train(
            r.config,
            parent_run_id=report_run_id,
            tags={**_tags(by_name[r.name], r.seed), "runner": "standard"},
            log_epochs=False,
        )
        run_id = summary["mlflow_run_id"]
        retrains.append(Retrain(r.name, r.seed, _logged(tracker, run_id), run_id))
        seconds, score = summary["seconds_per_epoch"], _score(retrains[-1])
        log.info("retrain %s · seed %d: %s (%.2f s/epoch)", r.name, r.seed, score, seconds)
    return retrains


def _logged(tracker: Tracker, run_id: str) -> dict[str, float]:
    """A retrain's metrics as MLflow keeps them (each one's last value), the same whether the
    retrain ran now or is read back on a later report."""
    return dict(tracker.client.get_run(run_id).data.metrics)


def _score(retrain: Retrain) -> str:
    """A retrain's score, for its log line."""
    metrics = retrain.metrics
    return next((f"{k} {100 * metrics[k]:.2f}%" for k in (*SCORES, *CV_SCORES) if k in metrics), "")
