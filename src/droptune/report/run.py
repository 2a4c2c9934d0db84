"""`make report`: open the finished study, retrain its winners and the baselines over seeds,
and write report.json (every number) beside a report run under the study's MLflow parent."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from droptune import __version__
from droptune.config import validate
from droptune.errors import ConfigError
from droptune.quiet import quiet_libraries
from droptune.report.candidates import baselines, top_configs
from droptune.report.mattered import what_mattered
from droptune.report.numbers import numbers
from droptune.report.retrain import CV_SCORES, SCORES, retrain_all, seeds_of
from droptune.study.loop import retrain_base
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


def _report_run(tracker: Tracker, study: optuna.Study) -> str:
    """The study's report run (a child of its parent run): the last one, or a new one."""
    parent = study.user_attrs["mlflow_parent_run_id"]
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}' and tags.droptune_role = 'report'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {"droptune_role": "report", "droptune_study": study.study_name}
    return tracker.start_run(f"report · {study.study_name}", tags, parent)


def make_report(
    cfg: Mapping[str, Any],
    choices: Mapping[str, Any] | None = None,
    cli_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Retrain the study's top configs (and baselines) over seeds; returns report.json's dict."""
    quiet_libraries()
    cfg = validate(cfg)
    r = cfg["report"]
    study = _study(cfg)
    candidates = top_configs(study, r["top_k"])
    if r["baselines"]:
        candidates += baselines(candidates[0], cfg["model"]["family"])
    cv = bool(cfg["data"]["cv_folds"])
    metric, keys = ("cv/acc_mean", CV_SCORES) if cv else ("test/acc", SCORES)
    # the report command's own paths and tracking follow each trial's line; report.* are its own
    shared = [o for o in retrain_base(choices or {}, cli_overrides) if not o.startswith("report.")]
    # every retrain tests on the study's held-out examples (its seed's split), which no trial saw
    shared += [] if cv else ["evaluate_test=true", f"test_seed={cfg['seed']}"]
    t = cfg["tracking"]
    tracker = Tracker(t["uri"], t["experiment"], t["artifact_root"])
    run_id = _report_run(tracker, study)
    error: BaseException | None = None
    try:
        seeds = seeds_of(cfg["seed"], r["seeds"])
        retrains = retrain_all(candidates, seeds, shared, tracker, run_id)
        result = {
            "study": study.study_name,
            "fingerprint": study.user_attrs.get("fingerprint"),
            "droptune_version": __version__,
            "git_commit": git_commit(cfg["paths"]["root_dir"]),
            "metric": metric,
            "split": "repeated k-fold: each seed splits the folds anew" if cv else "test set",
            "confidence": r["confidence"],
            "seeds": seeds,
            "configs": numbers(candidates, retrains, metric, keys, r["confidence"]),
            "what_mattered": what_mattered(study),
            "mlflow_report_run_id": run_id,
        }
        out = Path(cfg["paths"]["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(result, indent=2))
        tracker.client.log_artifact(run_id, str(out / "report.json"))
        return result
    except BaseException as caught:
        error = caught
        raise
    finally:
        tracker.end_run(run_id, end_status(error))
