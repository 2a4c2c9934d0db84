"""The `report` group: how many of the study's configs to retrain, over how many seeds."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from droptune.config.types import Allowed, Fraction, Group, PositiveInt


class Report(Group):
    top_k: PositiveInt  # the study's best distinct configs retrained
    # an interval needs two seeds; seed i of every config shares its data order and init
    seeds: Annotated[int, Field(ge=2), Allowed("an integer >= 2 (an interval needs two seeds)")]
    confidence: Fraction  # of the Student-t intervals
    baselines: bool  # also retrain the best config without dropout and with the textbook's
