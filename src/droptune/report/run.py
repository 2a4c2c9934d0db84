"""`make report`: open the finished study, retrain its winners, the baselines and the user's own
configs over seeds, and write report.json (every number), report.md and report.html beside a
report run (under the study's MLflow parent when there is a study)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from droptune import __version__
from droptune.config import validate
from droptune.errors import ConfigError
from droptune.quiet import quiet_libraries
from droptune.report.candidates import Candidate, baselines, configured, top_configs
from droptune.report.documents import write_documents
from droptune.report.mattered import what_mattered
from droptune.report.numbers import numbers
from droptune.report.retrain import (
    CV_SCORES,
    SCORES,
    checked_configs,
    retrain_all,
    seeds_of,
    with_shared,
)
from droptune.study.loop import RETRAIN_GROUPS, retrain_base
from droptune.study.resume import fingerprint
from droptune.study.storage import StaleTrialHandler, make_storage
from droptune.tracking import Tracker, end_status, git_commit, mask_url

log = logging.getLogger("droptune")


def _study(cfg: Mapping[str, Any]) -> optuna.Study:
    """The study the config names; one line if there is none, or its data differs."""
    s = cfg["study"]
    names = []
    sqlite_file = s["storage"].removeprefix("sqlite:///")
    if sqlite_file == s["storage"] or Path(sqlite_file).exists():  # opening creates a file
        storage = make_storage(s, StaleTrialHandler(None, lambda trial: None))
        names = [x.study_name for x in optuna.get_all_study_summaries(storage)]
    if s["name"] not in names:
        listed = ", ".join(names) or "none"
        raise ConfigError(
            "study.name", s["name"], f"a study in {mask_url(s['storage'])} (it has: {listed})"
        )
    study = optuna.load_study(study_name=s["name"], storage=storage)
    stored = study.user_attrs.get("fingerprint_parts", {}).get("data")
    asked = fingerprint(cfg, {})["data"]
    if stored is not None and stored != asked:
        changed = sorted(k for k in asked if asked[k] != stored.get(k))
        key = f"data.{changed[0]}" if changed else "data"
        value = asked.get(changed[0]) if changed else asked
        raise ConfigError(
            key, value, f"the study's own ({stored.get(changed[0]) if changed else stored})"
        )
    return study


def _candidates(cfg: Mapping[str, Any], study: optuna.Study | None) -> list[Candidate]:
    """The study's best, then the user's own; refused if there are none."""
    r = cfg["report"]
    candidates = top_configs(study, r["top_k"]) if study is not None else []
    candidates += configured(r["configs"] or {})
    if not candidates:
        raise ConfigError(
            "report.configs",
            r["configs"],
            "at least one config when no study is read (report.from_study=false)",
        )
    return candidates


def _named_once(candidates: Sequence[Candidate], reference: str) -> None:
    """Every config named once, the reference among them."""
    names = [c.name for c in candidates]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            "report.configs", twice, "names other than the study's trials' and the baselines'"
        )
    if reference not in names:
        raise ConfigError(
            "report.reference", reference, f"one of the retrained configs ({', '.join(names)})"
        )


def _shared(cli_overrides: Sequence[str]) -> list[str]:
    """The report command's own overrides that every retrain takes (paths, tracking, trainer
    keys): those a trial's line keeps (`retrain_base`), less the groups a config's line names
    itself (a later `data=` would replace its own) and the report's own keys."""
    return [
        o
        for o in retrain_base({}, cli_overrides)
        if not o.lstrip("+~").startswith(("report.", "compare="))
        and o.split("=")[0].lstrip("+~") not in RETRAIN_GROUPS
    ]


def _report_run(tracker: Tracker, name: str, parent: str | None) -> str:
    """The report's run, found by its name (so a report that adds configs to an earlier one
    reuses that one's retrains), or a new one: a child of the study's parent run, if any."""
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        f"tags.droptune_role = 'report' and tags.droptune_report = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {"droptune_role": "report", "droptune_report": name}
    return tracker.start_run(f"report · {name}", tags, parent)


def _scoring(configs: Mapping[str, Mapping[str, Any]]) -> tuple[str, tuple[str, ...]]:
    """The metric every config is scored by: test/acc, or cv/acc_mean under k-fold. Configs
    scored differently cannot be compared, seed by seed."""
    cv = {name: bool(c["data"]["cv_folds"]) for name, c in configs.items()}
    if len(set(cv.values())) > 1:
        raise ConfigError("data.cv_folds", cv, "the same for every config (all k-fold, or none)")
    return ("cv/acc_mean", CV_SCORES) if any(cv.values()) else ("test/acc", SCORES)


@dataclass(frozen=True)
class Plan:
    """What a report will retrain and how it scores it, every part checked before training."""

    name: str  # the report's (its MLflow run's)
    study: optuna.Study | None
    candidates: list[Candidate]  # each with its whole `make train` line, as it is retrained
    metric: str  # what the configs are compared by
    keys: tuple[str, ...]  # every score kept per seed
    experiment: str  # the MLflow experiment of the report run and its retrains


def plan(cfg: Mapping[str, Any], cli_overrides: Sequence[str] = ()) -> Plan:
    """The report's plan from its (validated) config: one ConfigError if any part is wrong."""
    r = cfg["report"]
    study = _study(cfg) if r["from_study"] else None
    candidates = _candidates(cfg, study)
    shared = _shared(cli_overrides)
    configs = checked_configs(candidates, shared)
    if r["baselines"]:  # on the first config's network, whichever family it is
        extra = baselines(candidates[0], configs[candidates[0].name]["model"]["family"])
        configs |= checked_configs(extra, shared)
        candidates += extra
    _named_once(candidates, r["reference"])
    metric, keys = _scoring(configs)
    # the report and its retrains in one experiment: the study's, or the first config's
    experiment = (
        cfg["tracking"]["experiment"]
        if study is not None
        else configs[candidates[0].name]["tracking"]["experiment"]
    )
    shared.append(f"tracking.experiment={experiment}")
    # every retrain tests on the held-out examples of the study's seed, which no trial saw
    if not metric.startswith("cv/"):
        shared += ["evaluate_test=true", f"test_seed={cfg['seed']}"]
    lines = [replace(c, overrides=with_shared(c.overrides, shared)) for c in candidates]
    name = r["name"] or cfg["study"]["name"]
    return Plan(name, study, lines, metric, keys, experiment)


def make_report(cfg: Mapping[str, Any], cli_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Retrain the planned configs over seeds; returns report.json's dict (also written beside
    report.md and report.html, and logged on the report run)."""
    quiet_libraries()
    cfg = validate(cfg)
    r = cfg["report"]
    planned = plan(cfg, cli_overrides)
    t = cfg["tracking"]
    tracker = Tracker(t["uri"], planned.experiment, t["artifact_root"])
    parent = planned.study.user_attrs["mlflow_parent_run_id"] if planned.study is not None else None
    run_id = _report_run(tracker, planned.name, parent)
    error: BaseException | None = None
    try:
        seeds = seeds_of(cfg["seed"], r["seeds"])
        retrains = retrain_all(planned.candidates, seeds, tracker, run_id, r["runner"])
        cv = planned.metric.startswith("cv/")
        result = {
            "report": planned.name,
            "study": planned.study.study_name if planned.study is not None else None,
            "fingerprint": planned.study.user_attrs.get("fingerprint") if planned.study else None,
            "droptune_version": __version__,
            "git_commit": git_commit(cfg["paths"]["root_dir"]),
            "metric": planned.metric,
            "split": "repeated k-fold: each seed splits the folds anew" if cv else "test set",
            "confidence": r["confidence"],
            "reference": r["reference"],
            "seeds": seeds,
            "configs": numbers(
                planned.candidates,
                retrains,
                metric=planned.metric,
                keys=planned.keys,
                confidence=r["confidence"],
                reference=r["reference"],
            ),
            "what_mattered": what_mattered(planned.study) if planned.study is not None else None,
            "mlflow_report_run_id": run_id,
        }
        for path in write_documents(result, planned.study, Path(cfg["paths"]["output_dir"])):
            tracker.client.log_artifact(run_id, str(path))
        return result
    except BaseException as caught:
        error = caught
        raise
    finally:
        tracker.end_run(run_id, end_status(error))
