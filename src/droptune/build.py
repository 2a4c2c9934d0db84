"""From a checked config to objects: the model (with its dropout sites set), its max-norm, the
optimizer settings, and the sites a config's model has."""

from __future__ import annotations

import functools
import json
import logging
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
from droptune.models.max_norm import MaxNorm, max_norm_layers
from droptune.models.nets import hidden_widths
from droptune.models.sites import (
    Inert,
    ProbeFailed,
    Site,
    Walk,
    matching,
    prove,
    set_site_rates,
    swap_variant,
    unmatched,
    walk,
)
from droptune.schedules import Schedule, ScheduledDropout

log = logging.getLogger("droptune")


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


def declared_kinds(model: Mapping[str, Any]) -> dict[type, str]:
    """`model.dropout.kinds` as {class: attribute}; droptune's own models declare none."""
    kinds = model["dropout"].get("kinds") or {}
    return {
        targets.resolve(f"model.dropout.kinds.{name}", name): attr for name, attr in kinds.items()
    }


def model_walk(model: Mapping[str, Any], net: nn.Module) -> Walk:
    """The sites of a built model, its declared kinds checked on every instance."""
    kinds = declared_kinds(model)
    try:
        found = walk(net, kinds)
    except ValueError as error:
        raise ConfigError("model.dropout.kinds", model["dropout"]["kinds"], str(error)) from None
    present = {type(net.get_submodule(site.holder)) for site in found.candidates}
    for cls, attr in kinds.items():
        if not any(issubclass(p, cls) for p in present):
            name = f"{cls.__module__}.{cls.__qualname__}"
            raise ConfigError(
                f"model.dropout.kinds.{name}", attr, f"a class the model has: no module is a {name}"
            )
    return found


@functools.cache
def _say_once(message: str) -> None:
    log.warning("%s", message)


def _swap_variant(net: nn.Module, variant: str, found: Walk) -> None:
    swap_variant(net, variant)
    kept = [site.path for site in found.settable if site.kind != "module"]
    if kept:
        _say_once(
            f"model.dropout.variant={variant} swaps dropout modules only: {len(kept)} site(s) of "
            f"other kinds ({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''}) keep their "
            "own dropout at the rates set"
        )


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
    found = model_walk(model, net)
    sites = model["dropout"]["sites"]
    if sites:
        try:
            set_site_rates(net, sites, found.settable)
        except ValueError as error:
            raise ConfigError("model.dropout.sites", dict(sites), str(error)) from None
    variant = model["dropout"]["variant"]
    if model["family"] in USER_FAMILIES and variant is not None:
        # after the rates: which sites are on decides for `concrete`
        _swap_variant(net, variant, found)
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
    """What `make sites` shows: the dropout sites of a config's model (those that act), the
    rates that are no site and why, and its max-norm layers."""

    sites: list[Site]
    inert: list[Inert]
    max_norm_layers: list[str]


def _structure(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model config less what is set after construction: what decides where rates act."""
    dropout = {k: v for k, v in model["dropout"].items() if k not in ("sites", "variant")}
    return {**model, "dropout": dropout | {"sites": None, "variant": None}}


@functools.lru_cache(maxsize=64)
def _proof(structure: str, input_shape: tuple[int, ...], n_classes: int) -> dict[str, str | None]:
    """{site or candidate path: None if it acts, else why not}, from one real build on the CPU
    (cached: a study's trials differ by rates, not by where they act)."""
    model = json.loads(structure)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        net = build_model(model, input_shape, n_classes)
        found = model_walk(model, net)
        try:
            acting, inert = prove(net, found.settable, input_shape)
        except ProbeFailed as failed:  # the sites' classes say they act; the candidates lose
            return {s.path: None for s in found.sites} | {
                s.path: str(failed) for s in found.candidates
            }
    return {site.path: None for site in acting} | {i.site.path: i.reason for i in inert}


def _built_on_meta(model: Mapping[str, Any], input_shape, n_classes: int) -> nn.Module:
    try:
        with torch.device("meta"):
            return build_model(model, input_shape, n_classes)
    except Exception:  # a constructor that computes with real tensors: on the CPU, which also
        return build_model(model, input_shape, n_classes)  # raises what is really wrong, if any


def model_sites(model: Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> ModelSites:
    """The model built without memory (on the meta device; on the CPU if its constructor needs
    real tensors) and walked; a user's sites and every candidate proven by a forward pass
    (`sites.prove`). Checks every key of `model.dropout.sites` against the sites that act."""
    net = _built_on_meta(model, input_shape, n_classes)
    found = model_walk(model, net)
    inert = list(found.inert)
    sites = list(found.sites)
    if found.candidates or model["family"] in USER_FAMILIES:  # droptune's own: act by design
        structure = json.dumps(_structure(model), sort_keys=True, default=str)
        proof = _proof(structure, tuple(input_shape), n_classes)
        sites = []
        for site in found.settable:
            reason = proof.get(site.path, "not found in a model built on the CPU")
            if reason is None:
                sites.append(site)
            else:
                inert.append(Inert(site, reason))
    _check_keys(model["dropout"]["sites"] or {}, sites, inert)
    layers: list[str] = []
    if model["max_norm"] is not None:
        # droptune's own models constrain every Linear and Conv but the output layer, as here
        own = model["family"] in OWN_FAMILIES
        layers = max_norm_layers(net, None) if own else constrained_layers(model, net)
    return ModelSites(sites, inert, layers)


def _check_keys(rates: Mapping[str, float], sites: Sequence[Site], inert: Sequence[Inert]) -> None:
    """A key that selects only rates that are no site would set nothing a forward pass reads."""
    for key in unmatched(sites, list(rates)):
        dead = [site.path for site in matching([i.site for i in inert], key)]
        raise ConfigError(
            "model.dropout.sites",
            dict(rates),
            f"{key!r} matches none of the sites {[site.path for site in sites]}; it matches "
            f"{', '.join(dead)}, which change(s) nothing a forward pass reads (make sites says why)",
        )


def site_params(
    model: Mapping[str, Any], input_shape: Sequence[int], n_classes: int
) -> dict[str, str]:
    """The rate and source every dropout site trains with (`site.<path>`: "0.3 Dropout",
    "0.1 MultiheadAttention.dropout"): what the MLflow UI shows of a run's real dropout."""
    found = model_sites(model, input_shape, n_classes).sites
    return {f"site.{site.path}": f"{site.rate} {site.source}" for site in found}


def schedule_of(model: Mapping[str, Any]) -> Schedule:
    return Schedule(**model["dropout"]["schedule"])


def dropout_schedule(
    model: Mapping[str, Any], net: nn.Module, sites: Sequence[Site]
) -> ScheduledDropout | None:
    """The callback that sets every site's rate each epoch under `model.dropout.schedule`
    (None for the constant schedule: the rates stay as built)."""
    schedule = schedule_of(model)
    if schedule.kind == "constant":
        return None
    return ScheduledDropout(net, sites, schedule)


def build_optim(optim: Mapping[str, Any]) -> Optim:
    ramp = optim["momentum_ramp"]
    fields = {k: v for k, v in optim.items() if k in Optim.__dataclass_fields__}
    fields["momentum_ramp"] = MomentumRamp(**ramp) if ramp is not None else None
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return Optim(**fields)
