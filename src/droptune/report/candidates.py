"""What the report retrains: the study's best distinct configs (of a multi-objective study, its
Pareto front's) and two baselines on the best one (the front's best by its first objective).

Every config is a `make train` override list (each trial keeps its own as the `overrides`
attribute), so a retrain is exactly the run a user would start by hand; a baseline is the best
config's list with its dropout settings overridden after it (Hydra's last override wins).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from droptune.config.types import USER_FAMILIES
from droptune.errors import ConfigError
from droptune.study.objectives import objectives_of_study

# Srivastava et al. 2014: p = 0.2 on the inputs, 0.5 on hidden units after the activation, and
# every unit's incoming weights kept at norm <= c with c of 3-4
TEXTBOOK = {"input": 0.2, "hidden": 0.5, "max_norm": 3.5}
NO_DROPOUT = "no dropout"
# a user model's sites, all at rate 0: `++` merges a glob matching every site after the config's
# own (a trial's line names them all at once), and the last glob wins
NO_SITE_DROPOUT = ("++model.dropout.sites={*:0.0}", "model.max_norm=null")
AS_WRITTEN = "as written"
# a user model's sites at the rates its own code sets: no rate, variant or schedule of droptune's
OWN_RATES = (
    "model.dropout.sites=null",
    "model.dropout.variant=null",
    "model.dropout.schedule.kind=constant",
    "model.max_norm=null",
)


@dataclass(frozen=True)
class Candidate:
    """One config to retrain over seeds."""

    name: str  # how the report names it: "trial 17", "no dropout", "textbook", "as written"
    overrides: tuple[str, ...]  # its `make train` line
    trial_number: int | None = None  # the study trial it comes from (None: a baseline)
    # that trial's score in the study (selected: biased up; several objectives: the first's)
    study_value: float | None = None


def top_configs(study: optuna.Study, k: int) -> list[Candidate]:
    """The k best finished trials with distinct parameters (a retried trial repeats its
    parameters), best first; of a multi-objective study, k of its Pareto front, best first by
    the first objective."""
    objectives = objectives_of_study(study)
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "overrides" in t.user_attrs
    ]
    if objectives.multi:
        complete = objectives.best(complete)
    complete.sort(key=lambda t: t.values[0], reverse=objectives.directions[0] == "maximize")
    chosen, seen = [], set()
    for trial in complete:
        params = json.dumps(trial.params, sort_keys=True, default=str)
        if params not in seen:
            seen.add(params)
            chosen.append(trial)
    if len(chosen) < k:
        raise ConfigError(
            "report.top_k",
            k,
            f"at most the study's {len(chosen)} {'Pareto' if objectives.multi else 'finished'} "
            f"trial(s) with distinct parameters (study {study.study_name}); run more trials or "
            "lower report.top_k",
        )
    return [
        Candidate(
            f"trial {t.number}",
            tuple(t.user_attrs["overrides"]),
            trial_number=t.number,
            study_value=t.values[0],
        )
        for t in chosen[:k]
    ]


def configured(configs: Mapping[str, Sequence[str]]) -> list[Candidate]:
    """The report's own configs (`report.configs`: name -> `make train` line), in their order."""
    return [Candidate(name, tuple(line)) for name, line in configs.items()]


def baselines(best: Candidate, family: str) -> list[Candidate]:
    """No dropout (every rate 0, max-norm off) and the textbook default (input 0.2, hidden 0.5
    after the activation, max-norm 3.5), both on the best config's network and optimizer.

    A user's model gets no dropout (every site it has set to 0: a glob that matches every
    site, merged after the config's own and so winning over them) and its dropout as written
    (the rates its own code sets), so tuning is measured against what its author had. Which of
    its sites is the input and which a hidden layer droptune cannot know: no textbook config."""
    if family in USER_FAMILIES:
        return [
            Candidate(NO_DROPOUT, (*best.overrides, *NO_SITE_DROPOUT)),
            Candidate(AS_WRITTEN, (*best.overrides, *OWN_RATES)),
        ]
    rates = ["input", "hidden", "output", *(["conv"] if family == "cnn" else [])]
    none = [f"model.dropout.{rate}=0.0" for rate in rates] + ["model.max_norm=null"]
    textbook = [
        f"model.dropout.input={TEXTBOOK['input']}",
        f"model.dropout.hidden={TEXTBOOK['hidden']}",
        "model.dropout.placement=after",
        "model.dropout.variant=inverted",
        f"model.max_norm={TEXTBOOK['max_norm']}",
    ]
    return [
        Candidate(NO_DROPOUT, (*best.overrides, *none)),
        Candidate("textbook", (*best.overrides, *textbook)),
    ]
