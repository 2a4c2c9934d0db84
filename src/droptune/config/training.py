"""The optimizer, Lightning Trainer, tracking and path groups."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field

from droptune.config.types import (
    Allowed,
    Group,
    Momentum,
    Open,
    Positive,
    PositiveInt,
    _given,
    finite,
    one_of,
)
from droptune.lit import SCHEDULES


class MomentumRamp(Group):
    start: Momentum
    end: Momentum
    epochs: PositiveInt


class OptimBase(Group):
    lr: Positive
    weight_decay: Annotated[finite(ge=0), Allowed("a number >= 0")]
    schedule: one_of(SCHEDULES)
    gamma: Annotated[finite(gt=0, le=1), Allowed("a decay factor in (0, 1]")]
    momentum_ramp: MomentumRamp | None


class Sgd(OptimBase):
    name: Literal["sgd"]
    momentum: Momentum
    nesterov: bool


class Adam(OptimBase):
    name: Literal["adam", "adamw"]
    betas: Annotated[
        list[Momentum], Field(min_length=2, max_length=2), Allowed("[beta1, beta2] in [0, 1)")
    ]


Optim = Annotated[Sgd | Adam, Discriminator("name")]


# --- training, tracking, paths -----------------------------------------------------------------


class Trainer(Open):
    """Keyword arguments of lightning.Trainer; droptune reads these."""

    accelerator: str
    max_epochs: PositiveInt


class Tracking(Group):
    uri: _given("an MLflow tracking URI (sqlite:///..., http://host:5000)")
    artifact_root: str | None
    experiment: _given("an MLflow experiment name")
    run_name: str | None
    system_metrics: Annotated[
        finite(gt=0) | None,
        Allowed("seconds > 0 between samples of CPU, memory and GPU use, or null: none"),
    ]


class Paths(Group):
    root_dir: str
    data_dir: str
    output_dir: str
