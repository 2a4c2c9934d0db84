"""What mattered in the study: Optuna's parameter importances, and for each dropout choice
(placement, variant, input dropout on or off, max-norm on or off, binned rates) the trial count,
best and median score per value, so "before or after the activation" has its evidence beside it.

The choices are read from each trial's `make train` line (its `overrides` attribute): a key a
trial leaves unset is the study's default and shows as "default".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from droptune.quiet import young_study_importances
from droptune.study.objectives import objectives_of_study

RATE_BINS = (0.0, 0.1, 0.3, 0.5, 1.0)  # no / light / medium / heavy dropout
SWITCHES = {
    "placement": "model.dropout.placement",
    "variant": "model.dropout.variant",
}


def _line(trial: FrozenTrial) -> dict[str, str]:
    """The trial's overrides as {key: value}, the last of a key winning (as in Hydra)."""
    pairs = (o.split("=", 1) for o in trial.user_attrs.get("overrides", []) if "=" in o)
    return {key.lstrip("+~"): value for key, value in pairs}


def _rate_bin(value: str) -> str:
    try:
        rate = float(value)
    except ValueError:  # a list, one rate per layer: its mean
        rate = float(np.mean([float(v) for v in value.strip("[]").split(",") if v.strip()]))
    for low, high in zip(RATE_BINS, RATE_BINS[1:], strict=False):
        if low <= rate < high:
            return f"{low:.1f}-{high:.1f}" if rate > 0 else "0"
    return f">= {RATE_BINS[-1]}"


def choices_of(trial: FrozenTrial) -> dict[str, str]:
    """The dropout choices a trial made, by name."""
    line = _line(trial)
    found = {name: line.get(key, "default") for name, key in SWITCHES.items()}
    if "model.dropout.input" in line:
        found["input dropout"] = "on" if float(line["model.dropout.input"]) > 0 else "off"
    if "model.max_norm" in line:
        found["max-norm"] = "off" if line["model.max_norm"] in ("null", "None") else "on"
    if "model.dropout.hidden" in line:
        found["hidden rate"] = _rate_bin(line["model.dropout.hidden"])
    for key, value in line.items():
        if key.startswith("model.dropout.sites."):
            found[f"rate of {key.removeprefix('model.dropout.sites.')}"] = _rate_bin(value)
    return found


def per_choice(trials: Sequence[FrozenTrial], maximize: bool) -> dict[str, list[dict[str, Any]]]:
    """For each choice, one row per value: trials, best and median score (COMPLETE trials)."""
    scores: dict[str, dict[str, list[float]]] = {}
    for trial in trials:
        for name, value in choices_of(trial).items():
            scores.setdefault(name, {}).setdefault(value, []).append(trial.values[0])
    pick = max if maximize else min
    return {
        name: [
            {"value": value, "trials": len(v), "best": pick(v), "median": float(np.median(v))}
            for value, v in sorted(by_value.items())
        ]
        for name, by_value in scores.items()
        if len(by_value) > 1 or "default" not in by_value  # a choice the study made
    }


def what_mattered(study: optuna.Study) -> dict[str, Any]:
    """Importances (Optuna's default evaluator) and the per-choice table of the study, its trials
    scored by its metric (of several objectives, the first)."""
    objectives = objectives_of_study(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    importances: Mapping[str, float] = {}
    if len(complete) >= 2:
        with young_study_importances():
            importances = optuna.importance.get_param_importances(
                study, target=lambda t: t.values[0]
            )
    return {
        "importances": {k: float(v) for k, v in importances.items()},
        "per_choice": per_choice(complete, objectives.directions[0] == "maximize"),
        "trials": len(complete),
        "metric": objectives.metric,
    }
