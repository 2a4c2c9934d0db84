"""The `report` group: which configs to retrain (the study's best, baselines, the user's own),
over how many seeds, and which config every other is compared with."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from droptune.config.types import Allowed, Fraction, Group, PositiveInt, one_of

TrainLine = Annotated[list[str], Allowed("a list of `make train` overrides (key=value)")]
Configs = Annotated[
    dict[str, TrainLine] | None,
    Allowed("null or a mapping of config names to `make train` override lists"),
]


class Report(Group):
    from_study: bool  # retrain the study's best configs (false: report.configs alone)
    top_k: PositiveInt  # the study's best distinct configs retrained
    configs: Configs  # the user's own configs, by name, retrained beside the study's
    # an interval needs two seeds; seed i of every config shares its data order and init
    seeds: Annotated[int, Field(ge=2), Allowed("an integer >= 2 (an interval needs two seeds)")]
    confidence: Fraction  # of the Student-t intervals
    baselines: bool  # also retrain the first config without dropout and with the textbook's
    reference: Annotated[str, Field(min_length=1), Allowed("the name of a retrained config")]
    name: str | None  # the report's MLflow run and folder name (null: the study's name)
    # fused: retrains that can share a fit train in one (all seeds); auto: where it pays (a GPU,
    # or small steps on a CPU)
    runner: one_of(("auto", "standard", "fused"))
