"""Create a study or resume it: the fingerprint that makes its trials comparable, checked on
every start, and the MLflow parent run its creator opens."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import optuna

from droptune.config.types import USER_FAMILIES
from droptune.errors import ConfigError
from droptune.study.objectives import objectives_of

log = logging.getLogger("droptune")
DATA_KEYS = (
    "name",
    "val_fraction",
    "test_fraction",
    "cv_folds",
    "standardize",
    "path",
    "target",
    "features",
)


def fingerprint(cfg: Mapping[str, Any], raw_space: Mapping[str, Any]) -> dict[str, Any]:
    """What makes trials of one study comparable; stored with the study, checked on resume."""
    user_model = cfg["model"]["family"] in USER_FAMILIES
    objectives = objectives_of(cfg)
    return {
        "search.space": json.loads(json.dumps(raw_space, sort_keys=True, default=str)),
        "data": {
            # None for a key its dataset does not have (MNIST holds no test fraction out)
            **{k: cfg["data"].get(k) for k in DATA_KEYS},
            # where a user's data comes from (absent for the datasets studies began with)
            **{k: cfg["data"][k] for k in ("_target_", "root") if k in cfg["data"]},
        },
        "model.family": cfg["model"]["family"],
        # a user's model is named by its target (droptune's own by family, as studies began)
        **({"model._target_": cfg["model"]["_target_"]} if user_model else {}),
        "study.metric": objectives.metric,
        "study.direction": objectives.directions[0],
        # a multi-objective study's (absent from single-objective ones, as studies began)
        **({"study.objectives": list(objectives.metrics)} if objectives.multi else {}),
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
    storage: optuna.storages.BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it after checking its direction and fingerprint.

    Returns (study, created). Creation is atomic in the storage (study names are unique), so of
    many workers starting together exactly one creates it: that one also creates the MLflow parent.
    """
    s = cfg["study"]
    parts = fingerprint(cfg, raw_space)
    objectives = objectives_of(cfg)
    common = {"study_name": s["name"], "storage": storage, "sampler": sampler, "pruner": pruner}
    try:
        study = optuna.create_study(**common, directions=list(objectives.directions))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(**common), False
    made = [d.name.lower() for d in study.directions]
    if made != list(objectives.directions):
        key, value = (
            ("study.objectives", s["objectives"])
            if s["objectives"]
            else ("study.direction", s["direction"])
        )
        what = ", ".join(made)
        raise ConfigError(key, value, f"{what}, as study {s['name']!r} was made")
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
        # the digest first: a worker that finds the parts already written (and so writes
        # nothing) reads the digest next, and it must be there
        study.set_user_attr("fingerprint", _digest(parts))
        study.set_user_attr("fingerprint_parts", parts)
    return study, created


def parent_run_id(study: optuna.Study, created: bool, wait_s: float = 60.0) -> str | None:
    """The MLflow parent run of a study: set by the worker that created it. Others wait for it
    (briefly: if that worker died first, None lets the caller find or create it by its tags)."""
    deadline = time.monotonic() + (0 if created else wait_s)
    while True:
        known = study.user_attrs.get("mlflow_parent_run_id")
        if known or time.monotonic() >= deadline:
            return known
        time.sleep(0.5)
