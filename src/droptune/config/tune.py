"""What a study adds: the search space and its entries, the study, the benchmark."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from droptune.config.adapter import config_error
from droptune.config.types import (
    CONDITIONS,
    PRUNERS,
    SAMPLERS,
    SPACE_TYPES,
    Allowed,
    Compile,
    Group,
    PositiveInt,
    Rate,
    Seconds,
    finite,
    one_of,
    require,
)
from droptune.errors import ConfigError
from droptune.models.stacked import STORAGE_DTYPES

Number = Annotated[finite(), Allowed("a number")]


class SpaceEntry(Group):
    """One dimension of a search space; what needs the composed config (does the path exist, are
    `when` names earlier entries) is checked by `search.parse_space`."""

    type: one_of(SPACE_TYPES)
    path: str | None = None
    low: Number | None = None
    high: Number | None = None
    log: bool = False
    step: Annotated[finite(gt=0) | None, Allowed("a number > 0")] = None
    choices: list[Any] = []
    when: dict[str, Any] = {}
    otherwise: Any = None  # used only when set (`"otherwise" in entry.model_fields_set`)

    @model_validator(mode="after")
    def _bounds(self) -> SpaceEntry:
        for ref, condition in self.when.items():
            ok = not isinstance(condition, Mapping) or (
                len(condition) == 1 and set(condition) <= set(CONDITIONS)
            )
            require(ok, f"when.{ref}", condition, f"one of {list(CONDITIONS)}")
        if self.type == "categorical":
            require(bool(self.choices), "choices", self.choices, "a non-empty list")
            return self
        require(self.low is not None, "low", self.low, "a number")
        require(self.high is not None, "high", self.high, "a number")
        require(self.low <= self.high, "low", self.low, f"a number <= high ({self.high})")
        require(not self.log or self.low > 0, "low", self.low, "a number > 0 when log is true")
        ok = self.step is None or not self.log
        require(ok, "step", self.step, "a number > 0, and only without log")
        whole = all(float(v).is_integer() for v in (self.low, self.high))
        require(self.type != "int" or whole, "low", self.low, "integer bounds for an int entry")
        return self

    def grid(self, name: str) -> list[Any]:
        """Every value, for the grid sampler: categorical choices or stepped ranges."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(
                f"search.space.{name}.step", None, "a step (the grid sampler needs one)"
            )
        count = int(round((self.high - self.low) / self.step)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


class SiteRateRange(Group):
    low: Rate
    high: Rate


class Search(Group):
    name: str
    space: dict[str, dict[str, Any]]  # kept as written: a key left out means something (otherwise)
    sites: Annotated[
        Literal["all"] | Annotated[list[str], Field(min_length=1)] | None,
        Allowed("all, or a non-empty list of module-path globs"),
    ] = None
    # search.sites=all: one rate per role (role, or null where a file leaves it out: sites that
    # differ by a block index share it), or per_site: one per site
    site_groups: Annotated[
        Literal["role", "per_site"] | None, Allowed("role, per_site or null (role)")
    ] = None
    site_rate: SiteRateRange | None = None
    # trials a new study runs first, before any sampled one ({entry name: value}; an entry left
    # out is sampled): a configuration known to be good, so the search starts from it
    enqueue: list[dict[str, Any]] | None = None

    @field_validator("space")
    @classmethod
    def _entries(cls, space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, raw in space.items():
            space_entry(name, raw)
        return space

    @model_validator(mode="after")
    def _site_range(self) -> Search:
        require(
            self.sites is None or self.site_rate is not None,
            "search.site_rate",
            None,
            "a range {low: RATE, high: RATE} for the sites' rates when search.sites is set "
            "(search=sites has one)",
        )
        return self


# --- the study and the benchmark ---------------------------------------------------------------


class Fused(Group):
    k: Annotated[int, Field(ge=1), Allowed("an integer >= 1: trials trained together in one fit")]
    compile: Compile
    precision: one_of(STORAGE_DTYPES)
    checkpoint_interval: Annotated[
        finite(ge=0) | None, Allowed("seconds >= 0 between a group's saves, or null: never")
    ]


class Study(Group):
    name: Annotated[
        str,
        Field(min_length=1),
        Allowed("a non-empty string (quote names Hydra reads as numbers: study.name='\"1e3\"')"),
    ]
    storage: Annotated[
        str | None,
        Allowed("a storage URL (sqlite:///..., postgresql+psycopg://...) or a journal file path"),
    ]
    pool_size: PositiveInt
    direction: one_of(("maximize", "minimize"), "maximize or minimize")
    metric: str | None
    objectives: Annotated[
        list[str] | None,
        Field(min_length=2),
        Allowed(
            "null, or a list of two or more metrics (val/acc, val/ece, my/metric:minimize, ...)"
        ),
    ]
    n_trials: Annotated[int, Field(ge=1), Allowed("an integer >= 1 (the study's total budget)")]
    timeout: Annotated[finite(gt=0) | None, Allowed("seconds > 0, or null")]
    sampler: one_of(SAMPLERS)
    sampler_args: dict[str, Any]
    pruner: one_of(PRUNERS)
    pruner_args: dict[str, Any]
    allow_changes: bool
    heartbeat_interval: Seconds
    grace_period: Seconds
    max_retry: Annotated[int, Field(ge=0), Allowed("an integer >= 0")]
    checkpoint_dir: str | None
    runner: one_of(("auto", "standard", "fused"))
    progress: Annotated[
        finite(gt=0) | None,
        Allowed("seconds > 0 between progress lines when stdout is not a terminal, or null: none"),
    ]
    fused: Fused

    @model_validator(mode="after")
    def _storage_and_heartbeats(self) -> Study:
        require(
            bool(self.storage),
            "study.storage",
            self.storage,
            "a storage URL (sqlite:///..., postgresql+psycopg://...) or a journal file path; "
            "with study=postgres, export DROPTUNE_STORAGE=postgresql+psycopg://user:pass@host/db",
        )
        ok = self.grace_period > self.heartbeat_interval
        require(ok, "study.grace_period", self.grace_period, "more than study.heartbeat_interval")
        return self


class Bench(Group):
    plain_widths: list[PositiveInt]
    plain_repeats: PositiveInt
    plain_epochs: Annotated[int, Field(ge=2), Allowed("an integer >= 2 (the first warms up)")]
    sonar_epochs: Annotated[int, Field(ge=2), Allowed("an integer >= 2 (the first warms up)")]
    epochs: PositiveInt
    reference_batches: PositiveInt
    ks: list[PositiveInt]
    bf16_ks: list[PositiveInt]
    compile: Compile
    profile_precisions: list[one_of(STORAGE_DTYPES)]
    profile_k: PositiveInt
    profile_steps: PositiveInt
    tune_trials: Annotated[int, Field(ge=0), Allowed("an integer >= 0 (0: skip)")]
    tune_epochs: PositiveInt
    tune_k: PositiveInt
    fused_ttq_timeout: Annotated[int, Field(ge=0), Allowed("whole seconds >= 0 (0: skip)")]
    fused_ttq_trials: PositiveInt
    fused_ttq_epochs: PositiveInt
    ttq_timeout: Annotated[int, Field(ge=0), Allowed("whole seconds >= 0 (0: skip)")]
    ttq_data: list[one_of(("fashion_mnist", "mnist"))]


def space_entry(name: str, raw: Any) -> SpaceEntry:
    """One `search.space` entry, checked on its own (spaces grow entries after composition)."""
    try:
        return SpaceEntry.model_validate(raw)
    except ValidationError as error:
        raise config_error(error, raw, f"search.space.{name}") from None
