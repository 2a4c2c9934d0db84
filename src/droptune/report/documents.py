"""The report as documents: report.json (every number), report.md (the tables, to paste) and a
self-contained report.html (the tables, every config's per-seed scores with their intervals,
the study's plots; plotly's script inlined once, so the file opens anywhere, offline)."""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go

from droptune.plots import optuna_figures
from droptune.report.numbers import headline, table

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: left; }
th { background: #f4f4f4; }
.headline { font-size: 1.25rem; font-weight: 600; padding: 0.6rem 1rem; background: #eef5ff; border-left: 4px solid #3b7ddd; }
code { background: #f4f4f4; padding: 0.1rem 0.3rem; word-break: break-all; }
.note { color: #555; }
"""


def train_line(overrides: Sequence[str]) -> str:
    """The `make train` command that trains a config once (add seed=N for a report's seed)."""
    return f'make train ARGS="{" ".join(shlex.quote(o) for o in overrides)}"'


def per_seed_figure(report: Mapping[str, Any]) -> go.Figure:
    """Each config's per-seed scores as points, its mean with its interval as a bar."""
    metric = report["metric"]
    figure = go.Figure()
    for row in report["configs"]:
        values = row["values"].get(metric, [])
        interval = row["intervals"].get(metric)
        figure.add_trace(
            go.Scatter(
                x=[row["name"]] * len(values),
                y=[100 * v for v in values],
                mode="markers",
                marker={"size": 8, "opacity": 0.5},
                text=[f"seed {s}" for s in row["seeds"]],
                name=f"{row['name']} (per seed)",
                showlegend=False,
            )
        )
        if interval is not None:
            mean = 100 * interval["mean"]
            figure.add_trace(
                go.Scatter(
                    x=[row["name"]],
                    y=[mean],
                    mode="markers",
                    marker={"size": 14, "symbol": "line-ew-open", "color": "black"},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [100 * interval["high"] - mean],
                        "arrayminus": [mean - 100 * interval["low"]],
                    },
                    name=f"{row['name']} (mean, {int(100 * report['confidence'])}% interval)",
                    showlegend=False,
                )
            )
    figure.update_layout(
        title=f"{metric} per seed, mean and {int(100 * report['confidence'])}% interval",
        yaxis_title=f"{metric} (%)",
        height=420,
        margin={"t": 50, "b": 40},
    )
    return figure


def _html_table(rows: Sequence[Sequence[Any]]) -> str:
    head, *body = rows
    cells = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    lines = [f"<tr>{cells}</tr>"]
    for row in body:
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return "<table>" + "".join(lines) + "</table>"


def _md_table(rows: Sequence[Sequence[Any]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def mattered_tables(mattered: Mapping[str, Any] | None) -> list[tuple[str, list[list[str]]]]:
    """Parameter importances, then one table per dropout choice, as (title, rows)."""
    if not mattered:
        return []
    tables = []
    importances = mattered["importances"]
    if importances:
        rows = [["parameter", "importance"]]
        rows += [[name, f"{value:.3f}"] for name, value in importances.items()]
        tables.append((f"Parameter importances ({mattered['trials']} finished trials)", rows))
    metric = mattered["metric"]

    def score(value: float) -> str:
        return f"{100 * value:.2f}%" if "acc" in metric else f"{value:.4f}"

    for choice, by_value in mattered["per_choice"].items():
        rows = [[choice, "trials", f"best {metric}", f"median {metric}"]]
        rows += [
            [str(v["value"]), str(v["trials"]), score(v["best"]), score(v["median"])]
            for v in by_value
        ]
        tables.append((f"By {choice}", rows))
    return tables


def provenance(report: Mapping[str, Any]) -> list[list[str]]:
    rows = [["", ""]]
    for key in ("report", "study", "fingerprint", "split", "seeds", "confidence"):
        rows.append([key, str(report[key])])
    rows += [
        ["droptune", f"{report['droptune_version']} (git {report['git_commit']})"],
        ["MLflow report run", report["mlflow_report_run_id"]],
    ]
    return rows


def _bias_note(report: Mapping[str, Any]) -> str:
    seeds = len(report["seeds"])
    trained = (
        f"Each config is trained on {seeds} seeds"
        if report["study"] is None
        else f"Each config is retrained on {seeds} fresh seeds (never the study's own)"
    )
    study = (
        ""
        if report["study"] is None
        else ' "in the study" is the trial\'s score when the study picked it: the best of many '
        "noisy scores, so biased upwards; the retrained score beside it is what to expect."
    )
    return (
        f"{trained} and scored by {report['metric']} ({report['split']}).{study} Differences to "
        f"{report['reference']} are paired seed by seed (same data order and, for networks of "
        "one shape, the same initial weights)."
    )


def _seed_note(report: Mapping[str, Any]) -> str:
    return "add seed=N for seed N; the report's: " + ", ".join(map(str, report["seeds"]))


def markdown(report: Mapping[str, Any]) -> str:
    parts = [
        f"# droptune report: {report['report']}",
        f"**{headline(report)}**",
        _md_table(table(report)),
        _bias_note(report),
    ]
    for title, rows in mattered_tables(report["what_mattered"]):
        parts += [f"## {title}", _md_table(rows)]
    parts.append(f"## The configs, as `make train` lines ({_seed_note(report)})")
    parts.append(
        "\n".join(f"- {row['name']}: `{train_line(row['overrides'])}`" for row in report["configs"])
    )
    parts += ["## Provenance", _md_table(provenance(report))]
    return "\n\n".join(parts) + "\n"


def page(report: Mapping[str, Any], figures: Mapping[str, go.Figure]) -> str:
    """report.html: plotly's script inlined with the first figure only."""
    plots = []
    for i, (title, figure) in enumerate(figures.items()):
        snippet = figure.to_html(full_html=False, include_plotlyjs=i == 0)
        plots.append(f"<h3>{html.escape(title.replace('_', ' '))}</h3>{snippet}")
    mattered = "".join(
        f"<h3>{html.escape(title)}</h3>{_html_table(rows)}"
        for title, rows in mattered_tables(report["what_mattered"])
    )
    lines = "".join(
        f"<li>{html.escape(row['name'])}: <code>{html.escape(train_line(row['overrides']))}</code></li>"
        for row in report["configs"]
    )
    name = html.escape(report["report"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>droptune report: {name}</title>
<style>{STYLE}</style></head><body>
<h1>droptune report: {name}</h1>
<p class="headline" id="headline">{html.escape(headline(report))}</p>
{_html_table(table(report))}
<p class="note">{html.escape(_bias_note(report))}</p>
{plots[0] if plots else ""}
{"<h2>What mattered in the study</h2>" + mattered if mattered else ""}
{"<h2>The study</h2>" + "".join(plots[1:]) if len(plots) > 1 else ""}
<h2>The configs, as <code>make train</code> lines ({html.escape(_seed_note(report))})</h2>
<ul>{lines}</ul>
<h2>Provenance</h2>{_html_table(provenance(report))}
</body></html>
"""


def write_documents(report: Mapping[str, Any], study: optuna.Study | None, out: Path) -> list[Path]:
    """report.json, report.md and report.html in `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {"Per seed": per_seed_figure(report)}
    if study is not None:
        figures.update(optuna_figures(study))
    written = {
        "report.json": json.dumps(report, indent=2),
        "report.md": markdown(report),
        "report.html": page(report, figures),
    }
    for file_name, text in written.items():
        (out / file_name).write_text(text, encoding="utf-8")
    return [out / file_name for file_name in written]
