"""The report's numbers from its retrains: each config's scores with intervals over seeds, and
each config's paired difference to the no-dropout baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from droptune.report.candidates import Candidate
from droptune.report.retrain import Retrain
from droptune.report.stats import Interval, paired_difference, t_interval

NO_DROPOUT = "no dropout"


def per_seed(retrains: Sequence[Retrain], candidate: str, key: str) -> list[float]:
    """`key` of each of the candidate's retrains, in seed order (only seeds that logged it)."""
    mine = sorted((r for r in retrains if r.candidate == candidate), key=lambda r: r.seed)
    return [r.metrics[key] for r in mine if key in r.metrics]


def numbers(
    candidates: Sequence[Candidate],
    retrains: Sequence[Retrain],
    metric: str,
    keys: Sequence[str],
    confidence: float,
) -> list[dict[str, Any]]:
    """One entry per candidate: its per-seed values and intervals of every key it logged, the
    study's score of its trial, and (beside the baseline) the paired difference in `metric`."""
    baseline = per_seed(retrains, NO_DROPOUT, metric)
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
        if (
            candidate.name != NO_DROPOUT
            and baseline
            and len(values.get(metric, [])) == len(baseline)
        ):
            row["vs_no_dropout"] = asdict(paired_difference(values[metric], baseline, confidence))
        rows.append(row)
    return rows


def summary_lines(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """One line per config: its metric with its interval, and what it bought over no dropout:
    'trial 7: test/acc 88.2% [87.9, 88.5] (study 88.9%), vs no dropout +1.9 points [+1.4, +2.4]'."""
    lines = []
    for row in rows:
        line = f"{row['name']}: {metric} {Interval(**row['intervals'][metric]).percent()}"
        if row["study_value"] is not None:
            line += f" (study {100 * row['study_value']:.1f}%)"
        if "vs_no_dropout" in row:
            line += f", vs no dropout {Interval(**row['vs_no_dropout']).points()}"
        lines.append(f"{line}, {len(row['seeds'])} seeds")
    return lines
