"""What a user sees, in a real headless Chromium (Debian's, driven by Playwright): `make ui` after
a small digits study, and `make dashboard`. Screenshots are kept in each test's temp folder."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from droptune.mlflow_ui import run_link
from droptune.study import optimize
from tests.cluster import free_port
from tests.helpers import REPO, compose_config

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
N_TRIALS = 4
STUDY = "pages"
METRIC = "val/acc_best"


@dataclass
class Served:
    """A `make` target serving pages, and what it printed."""

    url: str
    printed: str


@dataclass
class Study:
    root: Path
    summary: dict
    client: MlflowClient


@contextlib.contextmanager
def serve(target: str, *variables: str, health: str, log: Path) -> Iterator[Served]:
    """Starts `make <target>`, waits until `health` answers, and stops its process group after."""
    port = free_port()
    process = subprocess.Popen(
        ["make", "-s", target, *variables, f"UI_PORT={port}", f"DASHBOARD_PORT={port}"],
        cwd=REPO,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # make, the server and its workers: one group to stop
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    try:
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, f"{target} did not answer: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url + health, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield Served(url, log.read_text())
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """A small digits study (a few seconds), sampled for system metrics ten times a second so
    that every chart has a line of many samples, not a lone point."""
    root = tmp_path_factory.mktemp("pages")
    overrides = [
        f"paths.root_dir={root}", "trainer.accelerator=cpu", "data=digits", "model.width=32",
        "trainer.max_epochs=4", f"study.name={STUDY}", f"study.n_trials={N_TRIALS}",
        "study.pruner=none", "tracking.system_metrics=0.1",
    ]  # fmt: skip
    summary = optimize(compose_config(*overrides, config_name="tune"), {"data": "digits"})
    return Study(root, summary, MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db"))


@pytest.fixture(scope="module")
def ui(study) -> Iterator[Served]:
    uri = f"MLFLOW_URI=sqlite:///{study.root}/mlruns/mlflow.db"
    with serve("ui", uri, health="/health", log=study.root / "ui.log") as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser: no stored GenAI / model-training choice, no column choices."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    yield context.new_page()
    context.close()


def printed_link(served: Served, label: str) -> str:
    """The link `make ui` printed on the line that starts with `label`."""
    line = next(line for line in served.printed.splitlines() if line.strip().startswith(label))
    return line.split()[-1]


def close_assistant(page) -> None:
    """MLflow's Assistant panel opens beside every page; closed for the screenshot."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()


def model_training_view(page) -> bool:
    """The model-training view's experiment sidebar (Runs, Models, Traces), not the GenAI one's
    (Overview, Judges, Prompts)."""
    nav = page.get_by_text("Model registry")
    return nav.count() > 0 and page.get_by_text("Judges", exact=True).count() == 0


def test_make_ui_opens_the_model_training_view_with_each_trial_nested_under_its_study(
    study, ui, page, tmp_path
):
    experiment_link = printed_link(ui, "droptune-digits")
    assert "workflowType=machine_learning" in experiment_link
    page.goto(experiment_link)
    study_row = page.get_by_text(f"study {STUDY}", exact=True)
    study_row.wait_for(timeout=60_000)
    assert model_training_view(page)
    trial_links = page.get_by_role("link", name=re.compile(r"^trial \d+ · "))
    assert trial_links.count() == 0  # nested: hidden until the study's row is expanded
    row = study_row.locator("xpath=ancestor::*[@role='gridcell']")
    row.locator("button").first.click()
    trial_links.first.wait_for()
    assert trial_links.count() == N_TRIALS
    names = sorted(trial_links.all_inner_texts())  # readable: what each trial tried
    assert all(re.match(r"trial \d+ · hidden [\d.]+ (after|before) · .* · lr ", n) for n in names)
    assert page.get_by_text("digits (").count() >= N_TRIALS  # the Dataset column, each run's
    close_assistant(page)
    page.screenshot(path=tmp_path / "experiment.png")


def test_a_study_view_lists_its_trials_best_first_with_metric_state_and_params_as_columns(
    study, ui, page, tmp_path
):
    page.set_viewport_size({"width": 4000, "height": 1000})  # the grid draws visible columns only
    page.goto(printed_link(ui, f"study {STUDY}"))
    page.get_by_text("You're viewing a shared view").wait_for(timeout=60_000)
    trial_links = page.get_by_role("link", name=re.compile(r"^trial \d+ · "))
    trial_links.first.wait_for()
    assert trial_links.count() == N_TRIALS
    assert page.get_by_text(f"study {STUDY}", exact=True).count() == 0  # trials only
    headers = page.locator("[role=columnheader]").all_inner_texts()
    header_text = " ".join(headers)
    for column in ("val/acc_best", "state", "trial.hidden_rate", "trial.lr", "Dataset"):
        assert column in header_text
    best_first = [
        t.number
        for t in sorted(
            _trials(study), key=lambda t: t.value, reverse=True
        )  # the study's own ranking
    ]
    shown = [int(re.match(r"trial (\d+)", n).group(1)) for n in trial_links.all_inner_texts()]
    assert shown == best_first
    close_assistant(page)
    page.screenshot(path=tmp_path / "study-view.png")


def _trials(study: Study):
    import optuna

    storage = f"sqlite:///{study.root}/mlruns/optuna.db"
    return optuna.load_study(study_name=STUDY, storage=storage).get_trials()


def test_a_trial_page_charts_its_validation_accuracy_per_epoch(study, ui, page, tmp_path):
    from playwright.sync_api import expect

    best = next(t for t in _trials(study) if t.number == study.summary["best_trial"])
    run_id = best.user_attrs["mlflow_run_id"]
    experiment_id = study.summary["mlflow_experiment_id"]
    page.goto(run_link(ui.url, experiment_id, run_id).replace("?", "/model-metrics?"))
    page.get_by_placeholder("Search metric charts").fill("val/acc")
    card = page.get_by_test_id("experiment-view-compare-runs-card").filter(has_text="(val/acc)")
    card.first.wait_for(timeout=60_000)
    # one point per epoch; plotly draws them after the card appears, so wait for the count
    expect(card.first.locator("path.point")).to_have_count(
        len(best.intermediate_values), timeout=60_000
    )
    close_assistant(page)
    page.screenshot(path=tmp_path / "trial-metrics.png")


def test_the_study_run_lists_its_plots_and_charts_its_system_metrics(study, ui, page, tmp_path):
    parent = study.summary["mlflow_parent_run_id"]
    experiment_id = study.summary["mlflow_experiment_id"]
    page.goto(run_link(ui.url, experiment_id, parent).replace("?", "/artifacts?"))
    page.get_by_text("plots", exact=True).first.click(timeout=60_000)
    logged = {f.path.split("/")[-1] for f in study.client.list_artifacts(parent, "plots")}
    assert logged  # the study's Optuna plots
    for name in logged:
        page.get_by_text(name, exact=True).first.wait_for()
    close_assistant(page)
    page.screenshot(path=tmp_path / "study-plots.png")

    page.goto(run_link(ui.url, experiment_id, parent).replace("?", "/system-metrics?"))
    for metric in ("cpu_utilization_percentage", "system_memory_usage_megabytes"):
        samples = study.client.get_metric_history(parent, f"system/{metric}")
        assert len(samples) >= 2, samples  # a line, not a lone point
        card = page.get_by_test_id("experiment-view-compare-runs-card").filter(has_text=metric)
        card.first.scroll_into_view_if_needed(timeout=60_000)  # charts draw once in view
        card.locator("path.js-line").first.wait_for(timeout=60_000)
    page.screenshot(path=tmp_path / "system-metrics.png")


def test_make_dashboard_shows_the_study_and_its_trials(study, page, tmp_path):
    storage = f"OPTUNA_STORAGE=sqlite:///{study.root}/mlruns/optuna.db"
    with serve("dashboard", storage, health="/api/studies", log=tmp_path / "dash.log") as served:
        assert "/dashboard/" in served.printed
        page.goto(f"{served.url}/dashboard/")
        page.get_by_text(STUDY, exact=False).first.wait_for(timeout=60_000)
        page.screenshot(path=tmp_path / "dashboard.png")
        page.goto(f"{served.url}/dashboard/studies/1/trials")
        page.get_by_text(f"{N_TRIALS} Trials", exact=True).wait_for(timeout=60_000)
        page.screenshot(path=tmp_path / "dashboard-trials.png")
