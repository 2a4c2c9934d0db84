"""Study plots, refreshed on the parent run at the end of every tune invocation, and a trained
model's reliability diagram.

Optuna's own plots (optimization history, parameter importances, parallel coordinates, and for a
multi-objective study the Pareto front) as HTML (plotly), plus two that only a dropout study needs,
as PNG: the metric against the hidden dropout rate per placement, and the generalization gap
against the rate. A multi-objective study's history, coordinates and scatter show its first
objective; its importances, each objective.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization as plotly_plots  # noqa: E402
import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from droptune.calibration import ECE_BINS, expected_calibration_error  # noqa: E402
from droptune.quiet import young_study_importances  # noqa: E402
from droptune.study.objectives import objectives_of_study  # noqa: E402
from droptune.tracking import StudyTracking  # noqa: E402

log = logging.getLogger("droptune")

OPTUNA_PLOTS = ("plot_optimization_history", "plot_param_importances", "plot_parallel_coordinate")


def _drawers(study: optuna.Study) -> dict[str, Any]:
    """Each of Optuna's plots this study gets, as a function of the study."""
    objectives = objectives_of_study(study)
    if not objectives.multi:
        return {name: getattr(plotly_plots, name) for name in OPTUNA_PLOTS}
    first = {"target": lambda t: t.values[0], "target_name": objectives.metric}
    return {
        "plot_pareto_front": lambda s: plotly_plots.plot_pareto_front(
            s, target_names=list(objectives.metrics)
        ),
        "plot_optimization_history": lambda s: plotly_plots.plot_optimization_history(s, **first),
        "plot_param_importances": plotly_plots.plot_param_importances,  # one bar per objective
        "plot_parallel_coordinate": lambda s: plotly_plots.plot_parallel_coordinate(s, **first),
    }


def optuna_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's plots (plotly figures) by name; one that cannot be drawn yet is skipped."""
    figures = {}
    for name, draw in _drawers(study).items():
        try:
            with young_study_importances():
                figures[name.removeprefix("plot_")] = draw(study)
        except (ImportError, ValueError, RuntimeError, ZeroDivisionError) as error:
            log.info("plot %s skipped: %s", name.removeprefix("plot_"), error)
    return figures


def _optuna_plots(study: optuna.Study, out: Path) -> list[Path]:
    """Each plot as interactive HTML (plotly; MLflow's artifact view shows it in place).
    Optuna's matplotlib twins would add nothing to these but the time to draw them (most of a
    small study's plotting)."""
    written = []
    for name, figure in optuna_figures(study).items():
        path = out / f"{name}.html"
        figure.write_html(path)
        written.append(path)
    return written


def _scatter_by_placement(study: optuna.Study, y_of, ylabel: str, path: Path) -> Path | None:
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if "dropout_hidden" in t.user_attrs and y_of(t) is not None
    ]
    if not trials:
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    for placement in sorted({t.user_attrs["dropout_placement"] for t in trials}):
        group = [t for t in trials if t.user_attrs["dropout_placement"] == placement]
        axes.scatter(
            [t.user_attrs["dropout_hidden"] for t in group],
            [y_of(t) for t in group],
            label=f"{placement} activation",
            alpha=0.75,
        )
    axes.set_xlabel("hidden dropout rate (mean over layers)")
    axes.set_ylabel(ylabel)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def log_study_plots(study: optuna.Study, tracking: StudyTracking, out: Path) -> None:
    """Write the plots to `out` and log them to the study's parent run under plots/."""
    out.mkdir(parents=True, exist_ok=True)
    written = _optuna_plots(study, out)
    for path in (
        _scatter_by_placement(
            study,
            lambda t: t.values[0] if t.state == TrialState.COMPLETE else None,
            objectives_of_study(study).metric,
            out / "dropout_vs_metric.png",
        ),
        _scatter_by_placement(
            study,
            lambda t: t.user_attrs.get("gap_acc"),
            "gap/acc (train - val)",
            out / "gap_vs_dropout.png",
        ),
    ):
        if path is not None:
            written.append(path)
    for path in written:
        tracking.tracker.client.log_artifact(tracking.parent_run_id, str(path), "plots")


def reliability_diagram(bins: torch.Tensor, title: str) -> plt.Figure:
    """Accuracy against confidence per confidence bin (calibration.py's sums), the diagonal a
    perfectly calibrated model would follow, and how many predictions each bin holds."""
    # a confidence of exactly 1 has a bin of its own; drawn with the last bin's
    drawn = torch.cat((bins[:, : ECE_BINS - 1], bins[:, ECE_BINS - 1 :].sum(1, keepdim=True)), 1)
    count, confidence, correct = drawn.double().unbind(0)
    filled = count > 0
    width = 1.0 / ECE_BINS
    lefts = [i * width for i in range(ECE_BINS)]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    accuracy = torch.where(filled, correct / count.clamp(min=1), torch.zeros_like(count))
    top.bar(
        lefts, accuracy.tolist(), width=width, align="edge", edgecolor="black", label="accuracy"
    )
    mean_confidence = (confidence / count.clamp(min=1))[filled]
    top.plot(
        mean_confidence.tolist(),
        accuracy[filled].tolist(),
        "o",
        color="C1",
        label="mean confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    top.set_ylabel("accuracy")
    top.set_title(f"{title}: ECE {expected_calibration_error(bins).item():.4f}")
    top.legend(loc="upper left")
    bottom.bar(lefts, count.tolist(), width=width, align="edge", edgecolor="black")
    bottom.set_xlabel("confidence (top class)")
    bottom.set_ylabel("predictions")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    return figure


def log_reliability_diagram(client: MlflowClient, run_id: str, bins: torch.Tensor) -> None:
    """The diagram of a model's validation predictions as the run's reliability.png."""
    figure = reliability_diagram(bins, "validation")
    client.log_figure(run_id, figure, "reliability.png")
    plt.close(figure)
