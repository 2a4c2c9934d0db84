"""From a checked config to objects: the model (with its dropout sites set), its max-norm, the
optimizer settings, and the sites a config's model has."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from droptune import targets
from droptune.config.model import USER_MODEL_KEYS
from droptune.config.types import OWN_FAMILIES, USER_FAMILIES
from droptune.errors import ConfigError
from droptune.lit import MomentumRamp, Optim
from droptune.models.nets import hidden_widths
from droptune.models.sites import (
    MaxNorm,
    Site,
    dropout_modules,
    find_sites,
    max_norm_layers,
    set_site_rates,
    swap_variant,
)
from droptune.schedules import Schedule, ScheduledDropout


def mlp_widths(model: Mapping[str, Any]) -> list[int]:
    """Hidden widths: `widths` when given, else `width` repeated `depth` times."""
    return hidden_widths(model["depth"], model["width"], model["widths"])


def _user_model(model: Mapping[str, Any], input_shape, n_classes: int, lr: float | None):
    offered = targets.model_inputs(input_shape, n_classes, lr)
    net = targets.build("model", model, USER_MODEL_KEYS, offered)
    if not isinstance(net, nn.Module):
        raise ConfigError(
            "model._target_", model["_target_"], f"a class or factory of an nn.Module, not {net!r}"
        )
    if model["family"] == "lightning" and not isinstance(net, L.LightningModule):
        raise ConfigError(
            "model._target_",
            model["_target_"],
            "a LightningModule with model=lightning (model=custom takes a plain nn.Module)",
        )
    return net


def build_model(
    model: Mapping[str, Any], input_shape: Sequence[int], n_classes: int, lr: float | None = None
) -> nn.Module:
    """The nn.Module (for model=lightning, the LightningModule) a validated model config
    describes, with the rates of `model.dropout.sites` set on it. `lr` is offered to a user's
    LightningModule, whose optimizer is its own."""
    if model["family"] in USER_FAMILIES:
        net = _user_model(model, input_shape, n_classes, lr)
    else:
        arguments = {k: v for k, v in model.items() if k != "family"}
        # sites and schedule act on the built model; the rest are the model's own arguments
        dropout = model["dropout"].items()
        arguments["dropout"] = {k: v for k, v in dropout if k not in ("sites", "schedule")}
        net = targets.build("model", arguments, (), targets.model_inputs(input_shape, n_classes))
    sites = model["dropout"]["sites"]
    if sites:
        try:
            set_site_rates(net, sites)
        except ValueError as error:
            raise ConfigError("model.dropout.sites", dict(sites), str(error)) from None
    variant = model["dropout"]["variant"]
    if model["family"] in USER_FAMILIES and variant is not None:
        swap_variant(net, variant)  # after the rates: which sites are on decides for `concrete`
    return net


def model_constraint(model: Mapping[str, Any], net: nn.Module) -> Callable[[], None] | None:
    """Max-norm, run after each optimizer step: droptune's models constrain their own hidden
    layers; a user's model gets it on the layers `model.max_norm_layers` selects."""
    if model["max_norm"] is None:
        return None
    if model["family"] in OWN_FAMILIES:
        return net.apply_max_norm
    return MaxNorm(net, constrained_layers(model, net), model["max_norm"])


def constrained_layers(model: Mapping[str, Any], net: nn.Module) -> list[str]:
    try:
        return max_norm_layers(net, model["max_norm_layers"])
    except ValueError as error:
        raise ConfigError("model.max_norm_layers", model["max_norm_layers"], str(error)) from None


@dataclass(frozen=True)
class ModelSites:
    """What `make sites` shows: the dropout sites of a config's model, and its max-norm layers."""

    sites: list[Site]
    max_norm_layers: list[str]


def model_sites(model: Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> ModelSites:
    """The model built without memory (on the meta device; on the CPU if its constructor needs
    real tensors) and walked: checks every glob of the config against the sites found."""
    try:
        with torch.device("meta"):
            net = build_model(model, input_shape, n_classes)
    except Exception:  # a constructor that computes with real tensors: on the CPU, which also
        net = build_model(model, input_shape, n_classes)  # raises what is really wrong, if any

    layers: list[str] = []
    if model["max_norm"] is not None:
        # droptune's own models constrain every Linear and Conv but the output layer, as here
        own = model["family"] in OWN_FAMILIES
        layers = max_norm_layers(net, None) if own else constrained_layers(model, net)
    return ModelSites(find_sites(net), layers)


def site_params(
    model: Mapping[str, Any], input_shape: Sequence[int], n_classes: int
) -> dict[str, str]:
    """The rate and class every dropout site trains with (`site.<path>`: "0.3 Dropout"): what
    the MLflow UI shows of a run's real dropout."""
    found = model_sites(model, input_shape, n_classes).sites
    return {f"site.{site.path}": f"{site.rate} {site.kind}" for site in found}


def schedule_of(model: Mapping[str, Any]) -> Schedule:
    return Schedule(**model["dropout"]["schedule"])


def dropout_schedule(model: Mapping[str, Any], net: nn.Module) -> ScheduledDropout | None:
    """The callback that sets every site's rate each epoch under `model.dropout.schedule`
    (None for the constant schedule: the rates stay as built)."""
    schedule = schedule_of(model)
    if schedule.kind == "constant":
        return None
    return ScheduledDropout(dropout_modules(net).values(), schedule)


def build_optim(optim: Mapping[str, Any]) -> Optim:
    ramp = optim["momentum_ramp"]
    fields = {k: v for k, v in optim.items() if k in Optim.__dataclass_fields__}
    fields["momentum_ramp"] = MomentumRamp(**ramp) if ramp is not None else None
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return Optim(**fields)
