"""The choices and constrained types every group's schema is written in: each type carries the
words its error shows (`Allowed`), values are strict, and `Group` forbids unknown keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from droptune.data.datasets import DATASETS
from droptune.errors import ConfigError

IMAGE_DATASETS = ("mnist", "fashion_mnist", "digits", "image_folder")
DATA_NAMES = (*DATASETS, "image_folder", "custom")
OWN_FAMILIES = ("mlp", "cnn")  # droptune's models: their config keys are their arguments
USER_FAMILIES = ("custom", "lightning")  # a user's nn.Module / LightningModule
FAMILIES = OWN_FAMILIES + USER_FAMILIES
SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc", "grid")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
METRICS = {
    "val/acc_best": "maximize",
    "val/acc": "maximize",
    "val/loss": "minimize",
    "val/nll": "minimize",
    "val/ece": "minimize",
    "cv/acc_mean": "maximize",
    "cv/acc_best_mean": "maximize",
}
# which key picks a group's variant; pydantic puts the variant's tag into an error's location
VARIANT_KEYS = {"data": "name", "model": "family", "optim": "name"}
SPACE_TYPES = ("float", "int", "categorical")
CONDITIONS = ("ge", "gt", "in", "le", "lt", "ne")  # search.OPERATORS implements them


def _explained(error: ValidationError, text: str) -> PydanticCustomError:
    """pydantic's first complaint in droptune's words: an inner droptune error (a list element)
    keeps its own words, its own value and says where it is (`[1]`); anything else reads `text`."""
    first = error.errors()[0]
    if first["type"] != "droptune":
        context = {"allowed": text, "at": "", "value": first["input"]}
    else:
        inner = first["ctx"]
        at = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
        value = inner["value"] if inner["at"] else first["input"]
        context = {"allowed": inner["allowed"], "at": at + inner["at"], "value": value}
    return PydanticCustomError("droptune", "{allowed}", context)


def Allowed(text: str) -> WrapValidator:  # noqa: N802 (reads as part of a type annotation)
    """Whatever pydantic finds wrong inside, the user reads `text`."""

    def check(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            raise _explained(error, text) from None

    return WrapValidator(check)


def one_of(choices: Sequence[Any], text: str | None = None) -> Any:
    return Annotated[
        Literal[tuple(choices)],  # type: ignore[valid-type]
        Allowed(text or f"one of {', '.join(map(str, choices))}"),
    ]


def finite(**bounds: float) -> Any:
    return Annotated[float, Field(allow_inf_nan=False, **bounds)]


Rate = Annotated[finite(ge=0, lt=1), Allowed("a dropout rate in [0, 1)")]
PositiveInt = Annotated[int, Field(ge=1), Allowed("an integer >= 1")]
Positive = Annotated[finite(gt=0), Allowed("a number > 0")]
PositiveOrNull = Annotated[finite(gt=0) | None, Allowed("a number > 0 or null")]
Fraction = Annotated[finite(gt=0, lt=1), Allowed("a fraction in (0, 1)")]
TestFraction = Annotated[finite(ge=0, lt=1), Allowed("a fraction in [0, 1)")]
Momentum = Annotated[finite(ge=0, lt=1), Allowed("a number in [0, 1)")]
IntList = Annotated[
    list[PositiveInt], Field(min_length=1), Allowed("a non-empty list of integers >= 1")
]
Globs = Annotated[list[str] | None, Allowed("null or a list of module-path globs")]
Seconds = Annotated[int, Field(ge=1), Allowed("whole seconds >= 1")]
Compile = Annotated[Literal["auto"] | bool, Allowed("auto (on a GPU), true or false")]


def _set(value: str) -> str:
    if value == "???":  # Hydra's mandatory value, left unset
        raise ValueError("unset")
    return value


def _given(text: str) -> Any:
    """A string the config must set."""
    return Annotated[str, Field(min_length=1), AfterValidator(_set), Allowed(text)]


def _one_or_per_layer(value: Any, handler: Any) -> Any:
    """A rate for every layer, or a list with one per layer (pydantic's own union would report
    both members' complaints)."""
    adapter = _RATE_LIST if isinstance(value, list) else _RATE
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise _explained(error, "") from None


_STRICT = ConfigDict(strict=True)
_RATE = TypeAdapter(Rate, config=_STRICT)
_RATE_LIST = TypeAdapter(
    Annotated[list[Rate], Allowed("a list of dropout rates in [0, 1)")], config=_STRICT
)
Rates = Annotated[Any, WrapValidator(_one_or_per_layer)]


class Group(BaseModel):
    """A config group droptune owns: strict values, no unknown keys, read-only once checked."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)


class Open(Group):
    """A group whose other keys are someone else's arguments (a user's class, Lightning's Trainer)."""

    model_config = ConfigDict(extra="allow")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)
