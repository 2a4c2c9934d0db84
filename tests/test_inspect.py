"""What a study tells the user while and after it runs, outside a browser: the MLflow records the
UI shows (run names, datasets, the study's saved view, system metrics, which runner) and the
progress lines of `make tune` (test_pages.py opens the same pages in Chromium)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits

from droptune.mlflow_ui import EXPERIMENT_KIND, SHARED_VIEW_TAG, view_key
from droptune.study import optimize
from tests.helpers import REPO, compose_config

SMALL = ["data=digits", "model.width=32", "trainer.max_epochs=4", "study.pruner=none"]


def tune(tmp_path, *extra):
    overrides = [f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", *SMALL, *extra]
    cfg = compose_config(*overrides, config_name="tune")
    summary = optimize(cfg, {"data": "digits"}, overrides)
    study = optuna.load_study(study_name=cfg["study"]["name"], storage=cfg["study"]["storage"])
    return summary, study, MlflowClient(cfg["tracking"]["uri"]), cfg


def test_each_run_says_what_it_tried_and_trained_on_and_the_study_has_its_view(tmp_path):
    summary, study, client, cfg = tune(
        tmp_path, "study.name=seen", "study.n_trials=3", "tracking.system_metrics=0.2"
    )
    experiment = client.get_experiment(summary["mlflow_experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == EXPERIMENT_KIND
    parent = client.get_run(summary["mlflow_parent_run_id"])
    # study.runner=auto on a CPU, digits' small MLP: stacked, and the run says why
    assert parent.data.tags["runner"] == "fused"
    assert "multiply-accumulates a member-step <=" in parent.data.tags["runner_reason"]
    assert "system/cpu_utilization_percentage" in parent.data.metrics
    assert "system/system_memory_usage_megabytes" in parent.data.metrics

    digits = load_digits().target.size
    datasets = set()
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        name = run.info.run_name
        assert name.startswith(f"trial {trial.number} · hidden ")
        assert f"lr {trial.params['lr']:.2g}" in name
        assert trial.params["placement"] in name
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == "digits"
        assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
        sizes = json.loads(used.dataset.profile)
        assert sizes["train"] + sizes["validation"] + sizes["test"] == digits
        assert sizes["classes"] == 10
        datasets.add(used.dataset.digest)
    (parent_input,) = parent.inputs.dataset_inputs
    assert datasets == {parent_input.dataset.digest}  # one dataset, one digest

    view = json.loads(experiment.tags[SHARED_VIEW_TAG + view_key("seen")])
    assert view["orderByKey"] == "metrics.`val/acc_best`" and view["orderByAsc"] is False
    params = {c for c in view["selectedColumns"] if c.startswith("params.")}
    assert params == {f"params.`trial.{name}`" for name in cfg["search"]["space"]}
    selected = client.search_runs([experiment.experiment_id], view["searchFilter"])
    assert sorted(r.info.run_id for r in selected) == sorted(
        t.user_attrs["mlflow_run_id"] for t in study.trials
    )  # the view's filter is MLflow's syntax and selects the study's trials, not its run


def test_a_study_writes_progress_lines_when_stdout_is_not_a_terminal(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="droptune"):
        summary, study, _, _ = tune(
            tmp_path, "study.name=lines", "study.n_trials=3", "study.progress=1e-6"
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress: ")]
    epochs = [line for line in lines if re.search(r"trial \d+ epoch \d+/4", line)]
    assert len(epochs) >= 4 * 3 - 3  # an epoch's end can print (the interval is a microsecond)
    complete = summary["n_complete"]
    assert lines[-1].startswith(f"progress: 3/3 trials ({complete} complete, 0 pruned, 0 failed)")
    assert f"best {summary['best_value']:.4f} (#{summary['best_trial']})" in lines[-1]


@pytest.mark.slow
def test_make_tune_on_a_terminal_draws_one_live_line_under_the_trial_lines(tmp_path):
    command = [
        sys.executable, "pipelines/tune.py", f"paths.root_dir={tmp_path}",
        "trainer.accelerator=cpu", *SMALL, "study.name=live", "study.n_trials=2",
    ]  # fmt: skip
    # `script` runs the command on a pseudo-terminal, as a user's shell does
    shown = subprocess.run(
        ["script", "-qec", " ".join(command), "/dev/null"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stdout[-3000:]
    out = shown.stdout
    assert "\x1b[2K" in out  # the live line is redrawn in place (erase line) ...
    assert re.search(r"trial \d+ epoch \d+/4", out) and "elapsed" in out
    assert "progress: " not in out  # ... not printed as log lines
    assert len(re.findall(r"trial +\d+ COMPLETE", out)) == 2  # the log's line per trial
