"""The report's numbers from its retrains: each config's scores with intervals over seeds, and
each config's paired difference to the reference config (no dropout, unless told otherwise)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from droptune.report.candidates import Candidate
from droptune.report.retrain import Retrain
from droptune.report.stats import Interval, paired_difference, t_interval


def per_seed(retrains: Sequence[Retrain], candidate: str, key: str) -> list[float]:
    """`key` of each of the candidate's retrains, in seed order (only seeds that logged it)."""
    mine = sorted((r for r in retrains if r.candidate == candidate), key=lambda r: r.seed)
    return [r.metrics[key] for r in mine if key in r.metrics]


def numbers(
    candidates: Sequence[Candidate],
    retrains: Sequence[Retrain],
    *,
    metric: str,
    keys: Sequence[str],
    confidence: float,
    reference: str,
) -> list[dict[str, Any]]:
    """One entry per candidate: its per-seed values and intervals of every key it logged, the
    study's score of its trial, and (beside the reference) the paired difference in `metric`."""
    baseline = per_seed(retrains, reference, metric)
    rows = []
    for candidate in candidates:
        values = {k: per_seed(retrains, candidate.name, k) for k in keys}
        values = {k: v for k, v in values.items() if v}
        row = {
            "name": candidate.name,
            "trial_number": candidate.trial_number,
            "study_value": candidate.study_value,
            "overrides": list(candidate.overrides),
            "seeds": sorted(r.seed for r in retrains if r.candidate == candidate.name),
            "values": values,
            "intervals": {k: asdict(t_interval(v, confidence)) for k, v in values.items()},
        }
        if candidate.name != reference and len(values.get(metric, [])) == len(baseline) > 1:
            row["vs_reference"] = asdict(paired_difference(values[metric], baseline, confidence))
        rows.append(row)
    return rows


def headline(report: Mapping[str, Any]) -> str:
    """What the user asked, in one line: the first config (the study's best) that is not the
    reference against it, e.g. 'trial 7 vs no dropout: +1.9 points [+1.4, +2.4] of test/acc'."""
    rows = report["configs"]
    first = next((row for row in rows if "vs_reference" in row), rows[0])
    if "vs_reference" not in first:
        return f"{first['name']}: {_score(first, report['metric'])}"
    gain = Interval(**first["vs_reference"])
    return (
        f"{first['name']} vs {report['reference']}: {gain.points()} of {report['metric']} "
        f"({int(100 * report['confidence'])}% interval), {gain.n} paired seeds"
    )


def _score(row: Mapping[str, Any], metric: str) -> str:
    return Interval(**row["intervals"][metric]).percent() if metric in row["intervals"] else "-"


def _loss(row: Mapping[str, Any]) -> str:
    if "test/loss" not in row["intervals"]:  # k-fold: no test set
        return "-"
    loss = Interval(**row["intervals"]["test/loss"])
    return f"{loss.mean:.3f} [{loss.low:.3f}, {loss.high:.3f}]"


def table(report: Mapping[str, Any]) -> list[list[str]]:
    """The configs as rows of text: name, the metric with its interval, the study's own score
    of that trial (selected as the best of many: biased up), the paired difference to the
    reference, the test loss and calibration error, the generalization gap and the seed count. The first row is the
    header."""
    metric, reference = report["metric"], report["reference"]
    header = ["config", metric, "in the study", f"vs {reference}", "test/loss", "test/ece"]
    rows = [[*header, "gap/acc", "seeds"]]
    for row in report["configs"]:
        study = row["study_value"]
        rows.append(
            [
                row["name"],
                _score(row, metric),
                "-" if study is None else f"{100 * study:.1f}%",
                Interval(**row["vs_reference"]).points() if "vs_reference" in row else "-",
                _loss(row),
                _score(row, "test/ece"),
                _score(row, "gap/acc"),
                str(len(row["seeds"])),
            ]
        )
    return rows


def console_table(report: Mapping[str, Any]) -> list[str]:
    """`table` aligned in columns, for the terminal."""
    rows = table(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
