"""What the MLflow UI opens on: links into its model-training view, and a saved view per study.

MLflow 3's UI keeps a GenAI / model-training switch per browser: a new browser lands on the GenAI
overview (traces, judges, prompts, no runs) unless the link says `workflowType=machine_learning`,
so every link droptune prints says it. Experiments are also tagged `mlflow.experimentKind` =
custom model development (the experiments list shows them as machine learning); 3.17's UI, with
its switch, does not open on the tag alone (checked in Chromium).

The runs table's columns are not URL state (the UI keeps them per browser); a saved view is. A
study's view is the UI's own "share view" record, an experiment tag
`mlflow.sharedViewState.<key>` that `?viewStateShareKey=<key>` opens: the study's trials, best
first by its (first) metric, with its metrics, each trial's state and its sampled params as
columns. (The UI leaves expanded rows out of a shared view, and a table sorted by a metric lists
child runs flat: the experiment's own link shows each study's run with its trials nested under
it.)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence

from mlflow.tracking import MlflowClient

WORKFLOW = "workflowType=machine_learning"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SHARED_VIEW_TAG = "mlflow.sharedViewState."
DEFAULT_UI = "http://127.0.0.1:5000"


def runs_link(ui: str, experiment_id: str, view: str | None = None) -> str:
    """The experiment's runs table in the model-training view (a study's view with `view`)."""
    shared = f"viewStateShareKey={view}&" if view else ""
    return f"{ui}/#/experiments/{experiment_id}/runs?{shared}{WORKFLOW}"


def run_link(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW}"


def view_key(study_name: str) -> str:
    """A study's view key: the study name in the characters a tag key and a URL take as they are."""
    return "study-" + re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)


def _quoted(value: str) -> str:
    """A string literal of MLflow's search syntax."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def _column(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"  # the UI's canonical column key


def study_view(
    *,
    study_name: str,
    metrics: Sequence[str],
    maximize: bool,
    param_names: Sequence[str],
) -> dict:
    """The saved view's state: the UI's search facets and the runs table's UI state, sorted by
    the first of `metrics` (`maximize`: its direction)."""
    params = [_column("params", f"trial.{name}") for name in param_names]
    return {
        "searchFilter": f"tags.droptune_study = {_quoted(study_name)} and tags.droptune_role = 'trial'",
        "orderByKey": _column("metrics", metrics[0]),
        "orderByAsc": not maximize,
        "selectedColumns": [
            _column("attributes", "Dataset"),
            _column("attributes", "Duration"),
            *(_column("metrics", metric) for metric in metrics),
            _column("tags", "state"),
            *params,
        ],
    }


def save_study_view(client: MlflowClient, experiment_id: str, study_name: str, view: dict) -> str:
    """Writes (or replaces) the study's view on its experiment; returns its key."""
    key = view_key(study_name)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(view))
    return key


def print_links(uri: str, ui: str) -> None:
    """`make ui` prints these: each experiment's runs, and each study's own view."""
    client = MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    if not experiments:
        print(f"No droptune experiments yet in {uri}: run `make train` or `make tune` first.")
    for experiment in experiments:
        print(f"  {experiment.name:40s} {runs_link(ui, experiment.experiment_id)}")
        for key in sorted(experiment.tags):
            if key.startswith(SHARED_VIEW_TAG + "study-"):
                view = key.removeprefix(SHARED_VIEW_TAG)
                label = f"  study {view.removeprefix('study-')}"
                print(f"  {label:40s} {runs_link(ui, experiment.experiment_id, view)}")


if __name__ == "__main__":
    print_links(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else DEFAULT_UI)
