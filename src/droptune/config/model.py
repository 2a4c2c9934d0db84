"""The model group: droptune's MLP and CNN by their keys, a user's module by `_target_`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, field_validator, model_validator

from droptune import targets
from droptune.config.types import (
    Allowed,
    Fraction,
    Globs,
    Group,
    IntList,
    Open,
    PositiveInt,
    PositiveOrNull,
    Rate,
    Rates,
    _given,
    one_of,
    require,
)
from droptune.errors import ConfigError
from droptune.models import ACTIVATIONS, PLACEMENTS, VARIANTS
from droptune.models.dropout import SITE_VARIANTS
from droptune.models.nets import CONV_MODES, hidden_widths
from droptune.schedules import KINDS, SHAPES

SiteRates = Annotated[
    dict[str, Rate] | None, Allowed("a mapping of module-path globs to dropout rates, or null")
]
Variant = one_of(VARIANTS)


class DropoutSchedule(Group):
    kind: one_of(KINDS)
    cutoff: Fraction
    shape: one_of(SHAPES)


def _learned_rates_unscheduled(variant: str | None, schedule: DropoutSchedule) -> None:
    require(
        variant != "concrete" or schedule.kind == "constant",
        "model.dropout.schedule.kind",
        schedule.kind,
        "constant with variant=concrete (its sites learn their rates)",
    )


class MlpDropout(Group):
    input: Rate
    hidden: Rates
    output: Rate
    placement: one_of(PLACEMENTS)
    variant: Variant
    sites: SiteRates
    schedule: DropoutSchedule

    @model_validator(mode="after")
    def _dropconnect(self) -> MlpDropout:
        require(
            self.variant != "dropconnect" or self.output == 0,
            "model.dropout.output",
            self.output,
            "0.0 with variant=dropconnect (the last hidden rate drops the output layer's weights)",
        )
        _learned_rates_unscheduled(self.variant, self.schedule)
        return self


class CnnDropout(MlpDropout):
    conv: Rates
    conv_mode: one_of(CONV_MODES)
    block_size: Annotated[int, Field(ge=1), Allowed("an odd integer >= 1")]

    @model_validator(mode="after")
    def _odd_block(self) -> CnnDropout:
        odd = self.block_size % 2 == 1  # a block centred on its seed, as torchvision draws it
        require(odd, "model.dropout.block_size", self.block_size, "an odd integer >= 1")
        return self


def _per_layer(key: str, rates: Any, n_layers: int) -> None:
    if isinstance(rates, list):
        require(len(rates) == n_layers, key, rates, f"a list of {n_layers} rates (one per layer)")


class OwnModel(Group):
    target: Annotated[str, Field(alias="_target_")]
    activation: one_of(tuple(ACTIVATIONS))
    max_norm: PositiveOrNull
    init_std: PositiveOrNull


class Mlp(OwnModel):
    family: Literal["mlp"]
    depth: Annotated[PositiveInt | None, Allowed("an integer >= 1")]
    width: Annotated[PositiveInt | None, Allowed("an integer >= 1")]
    widths: Annotated[IntList | None, Allowed("null or a non-empty list of integers >= 1")]
    dropout: MlpDropout

    @model_validator(mode="after")
    def _layers(self) -> Mlp:
        if self.widths is not None:
            n = len(self.widths)
            ok = self.depth in (None, n)
            require(ok, "model.depth", self.depth, f"the length of model.widths ({n}), or null")
        else:
            require(self.depth is not None, "model.depth", self.depth, "an integer >= 1")
            require(self.width is not None, "model.width", self.width, "an integer >= 1")
        n_hidden = len(hidden_widths(self.depth, self.width, self.widths))
        _per_layer("model.dropout.hidden", self.dropout.hidden, n_hidden)
        return self


class Cnn(OwnModel):
    family: Literal["cnn"]
    channels: IntList
    kernel_size: PositiveInt
    pool: one_of(("max", "avg"))
    head_widths: IntList
    dropout: CnnDropout

    @model_validator(mode="after")
    def _layers(self) -> Cnn:
        _per_layer("model.dropout.conv", self.dropout.conv, len(self.channels))
        _per_layer("model.dropout.hidden", self.dropout.hidden, len(self.head_widths))
        return self


Kinds = Annotated[
    dict[str, str] | None,
    Allowed("a mapping of class import paths to the float attribute that holds each one's rate"),
]


class UserDropout(Group):
    sites: SiteRates
    kinds: Kinds
    # DropConnect needs the layer after each site, which only droptune's own models know
    variant: Annotated[
        one_of(SITE_VARIANTS) | None, Allowed(f"null or one of {', '.join(SITE_VARIANTS)}")
    ]
    schedule: DropoutSchedule

    @field_validator("kinds")
    @classmethod
    def _classes(cls, kinds: dict[str, str] | None) -> dict[str, str] | None:
        for name, attribute in (kinds or {}).items():
            key = f"model.dropout.kinds.{name}"
            if not isinstance(targets.resolve(key, name), type):
                raise ConfigError(key, attribute, f"{name} to be a class (an nn.Module subclass)")
            require(attribute.isidentifier(), key, attribute, "the name of an attribute")
        return kinds

    @model_validator(mode="after")
    def _learned(self) -> UserDropout:
        _learned_rates_unscheduled(self.variant, self.schedule)
        return self


class UserModel(Open):
    """A user's nn.Module (custom) or LightningModule (lightning): every key but these four is
    an argument of its `_target_`."""

    target: Annotated[_given("a dotted path to a class or function"), Field(alias="_target_")]
    family: Literal["custom", "lightning"]
    dropout: UserDropout
    max_norm: PositiveOrNull
    max_norm_layers: Globs

    @field_validator("target")
    @classmethod
    def _imports(cls, target: str) -> str:
        targets.resolve("model._target_", target)
        return target


USER_MODEL_KEYS = ("family", "dropout", "max_norm", "max_norm_layers")  # droptune's, not _target_'s
Model = Annotated[Mlp | Cnn | UserModel, Discriminator("family")]
