"""Config validation and the builders that turn plain config values into objects.

`validate` runs before any data is loaded or any trial starts, and raises one ConfigError naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from droptune import targets
from droptune.data.datasets import DATASETS
from droptune.errors import ConfigError
from droptune.lit import OPTIMIZERS, SCHEDULES, MomentumRamp, Optim
from droptune.models import ACTIVATIONS, PLACEMENTS, VARIANTS
from droptune.models.nets import hidden_widths
from droptune.models.sites import (
    MaxNorm,
    Site,
    find_sites,
    max_norm_layers,
    set_site_rates,
    swap_variant,
)

IMAGE_DATASETS = ("mnist", "fashion_mnist", "digits", "image_folder")
DATA_NAMES = (*DATASETS, "image_folder", "custom")
OWN_FAMILIES = ("mlp", "cnn")  # droptune's models: their config keys are their arguments
USER_FAMILIES = ("custom", "lightning")  # a user's nn.Module / LightningModule
FAMILIES = OWN_FAMILIES + USER_FAMILIES
# keys of a user model's config that droptune reads; every other key is an argument of _target_
USER_MODEL_KEYS = ("family", "dropout", "max_norm", "max_norm_layers")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _rate(key: str, value: Any) -> None:
    _check(_is_number(value) and 0 <= value < 1, key, value, "a dropout rate in [0, 1)")


def _rates(key: str, value: Any, n_layers: int) -> None:
    """A float for every layer, or a list with one rate per layer."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        _check(
            len(value) == n_layers, key, list(value), f"a list of {n_layers} rates (one per layer)"
        )
        for i, rate in enumerate(value):
            _rate(f"{key}[{i}]", rate)
    else:
        _rate(key, value)


def _positive_int(key: str, value: Any) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        key,
        value,
        "an integer >= 1",
    )


def _positive(key: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    _check(
        _is_number(value) and value > 0,
        key,
        value,
        "a number > 0" + (" or null" if optional else ""),
    )


def _one_of(key: str, value: Any, choices: Sequence[str]) -> None:
    _check(value in choices, key, value, f"one of {', '.join(choices)}")


def _int_list(key: str, value: Any) -> None:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
    _check(ok, key, value, "a non-empty list of integers >= 1")
    for i, item in enumerate(value):
        _positive_int(f"{key}[{i}]", item)


def mlp_widths(model: Mapping[str, Any]) -> list[int]:
    """Hidden widths: `widths` when given, else `width` repeated `depth` times."""
    return hidden_widths(model.get("depth"), model.get("width"), model.get("widths"))


def _site_rates(key: str, value: Any) -> None:
    """model.dropout.sites: {glob: rate}."""
    if value is None:
        return
    _check(isinstance(value, Mapping), key, value, "a mapping of module-path globs to rates")
    for glob, rate in value.items():
        _rate(f"{key}.{glob}", rate)


def _globs(key: str, value: Any) -> None:
    ok = value is None or (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(g, str) for g in value)
    )
    _check(ok, key, value, "null or a list of module-path globs")


def validate_data(data: Mapping[str, Any]) -> None:
    _one_of("data.name", data.get("name"), DATA_NAMES)
    _positive_int("data.batch_size", data.get("batch_size"))
    val = data.get("val_fraction")
    _check(_is_number(val) and 0 < val < 1, "data.val_fraction", val, "a fraction in (0, 1)")
    test = data.get("test_fraction", 0.0)
    _check(_is_number(test) and 0 <= test < 1, "data.test_fraction", test, "a fraction in [0, 1)")
    folds = data.get("cv_folds")
    if folds is not None:
        _check(
            isinstance(folds, int) and not isinstance(folds, bool) and folds >= 2,
            "data.cv_folds",
            folds,
            "null (one train/val split) or an integer >= 2",
        )
    if data["name"] == "custom":
        targets.resolve("data._target_", data.get("_target_"))
        _check(
            folds is None, "data.cv_folds", folds, "null: a user's DataModule splits its own data"
        )
        if data.get("n_classes") is not None:
            _positive_int("data.n_classes", data["n_classes"])
        if data.get("input_shape") is not None:
            _int_list("data.input_shape", data["input_shape"])
    if data["name"] == "image_folder":
        _check(bool(data.get("root")), "data.root", data.get("root"), "a folder of class folders")
        _one_of("data.mode", data.get("mode", "RGB"), ("RGB", "L"))
        size = data.get("image_size")
        if size is not None and not isinstance(size, int):
            _int_list("data.image_size", size)
            _check(len(size) == 2, "data.image_size", size, "[height, width] or one int")
        elif size is not None:
            _positive_int("data.image_size", size)
        if data.get("max_resident_bytes") is not None:
            _positive_int("data.max_resident_bytes", data["max_resident_bytes"])
    if data["name"] == "csv":
        _check(bool(data.get("path")), "data.path", data.get("path"), "the path of a CSV file")
        _check(
            bool(data.get("target")), "data.target", data.get("target"), "the label column's name"
        )


def validate_user_model(model: Mapping[str, Any]) -> None:
    """A user's model: its target imports; droptune's own keys hold what they may."""
    targets.resolve("model._target_", model.get("_target_"))
    dropout = model.get("dropout") or {}
    variant = dropout.get("variant")
    if variant is not None:
        _one_of("model.dropout.variant", variant, VARIANTS)
    _site_rates("model.dropout.sites", dropout.get("sites"))
    _positive("model.max_norm", model.get("max_norm"), optional=True)
    _globs("model.max_norm_layers", model.get("max_norm_layers"))


def validate_model(model: Mapping[str, Any], dataset: str) -> None:
    _one_of("model.family", model.get("family"), FAMILIES)
    if model["family"] in USER_FAMILIES:
        validate_user_model(model)
        return
    _one_of("model.activation", model.get("activation"), tuple(ACTIVATIONS))
    dropout = model.get("dropout") or {}
    _site_rates("model.dropout.sites", dropout.get("sites"))
    _rate("model.dropout.input", dropout.get("input", 0.0))
    _rate("model.dropout.output", dropout.get("output", 0.0))
    _one_of("model.dropout.placement", dropout.get("placement", "after"), PLACEMENTS)
    _one_of("model.dropout.variant", dropout.get("variant", "inverted"), VARIANTS)
    _positive("model.max_norm", model.get("max_norm"), optional=True)
    _positive("model.init_std", model.get("init_std"), optional=True)
    if model["family"] == "mlp":
        if model.get("widths") is not None:
            _int_list("model.widths", model["widths"])
            if model.get("depth") is not None:
                _check(
                    len(model["widths"]) == model["depth"],
                    "model.depth",
                    model["depth"],
                    f"the length of model.widths ({len(model['widths'])}), or null",
                )
        else:
            _positive_int("model.depth", model.get("depth"))
            _positive_int("model.width", model.get("width"))
        n_hidden = len(mlp_widths(model))
    else:
        _check(
            dataset in (*IMAGE_DATASETS, "custom"),
            "model",
            "cnn",
            f"an image dataset ({', '.join(IMAGE_DATASETS)}); data={dataset} is a table",
        )
        _int_list("model.channels", model.get("channels"))
        _int_list("model.head_widths", model.get("head_widths"))
        _positive_int("model.kernel_size", model.get("kernel_size"))
        _one_of("model.pool", model.get("pool", "max"), ("max", "avg"))
        _one_of(
            "model.dropout.conv_mode", dropout.get("conv_mode", "element"), ("element", "channel")
        )
        _rates("model.dropout.conv", dropout.get("conv", 0.0), len(model["channels"]))
        n_hidden = len(model["head_widths"])
    _rates("model.dropout.hidden", dropout.get("hidden", 0.0), n_hidden)


def validate_optim(optim: Mapping[str, Any]) -> None:
    _one_of("optim.name", optim.get("name"), OPTIMIZERS)
    _positive("optim.lr", optim.get("lr"))
    if optim["name"] == "sgd":
        m = optim.get("momentum", 0.0)
        _check(_is_number(m) and 0 <= m < 1, "optim.momentum", m, "a number in [0, 1)")
    wd = optim.get("weight_decay", 0.0)
    _check(_is_number(wd) and wd >= 0, "optim.weight_decay", wd, "a number >= 0")
    _one_of("optim.schedule", optim.get("schedule", "none"), SCHEDULES)
    gamma = optim.get("gamma", 0.95)
    _check(_is_number(gamma) and 0 < gamma <= 1, "optim.gamma", gamma, "a decay factor in (0, 1]")
    ramp = optim.get("momentum_ramp")
    if ramp is not None:
        for end in ("start", "end"):
            v = ramp.get(end)
            _check(
                _is_number(v) and 0 <= v < 1, f"optim.momentum_ramp.{end}", v, "a number in [0, 1)"
            )
        _positive_int("optim.momentum_ramp.epochs", ramp.get("epochs"))


def validate(cfg: Mapping[str, Any]) -> None:
    """Check a composed train/tune config; the first problem found is raised as a ConfigError."""
    _check(isinstance(cfg.get("seed"), int), "seed", cfg.get("seed"), "an integer")
    validate_data(cfg["data"])
    validate_model(cfg["model"], cfg["data"]["name"])
    validate_optim(cfg["optim"])
    _positive_int("trainer.max_epochs", cfg["trainer"].get("max_epochs"))
    # a user's DataModule: whether it has a test loader is known once it is built
    has_test = cfg["data"]["name"] in ("mnist", "fashion_mnist", "custom") or cfg["data"].get(
        "test_fraction", 0
    )
    if cfg.get("evaluate_test"):
        _check(
            bool(has_test),
            "evaluate_test",
            True,
            "only with a test set: data.test_fraction=0 holds none out",
        )
        if cfg["model"]["family"] == "lightning":
            module = targets.resolve("model._target_", cfg["model"]["_target_"])
            _check(
                getattr(module, "test_step", None) is not L.LightningModule.test_step,
                "evaluate_test",
                True,
                f"a LightningModule with a test_step: {cfg['model']['_target_']} has none",
            )


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
    variant = (model.get("dropout") or {}).get("variant")
    if variant is not None:
        swap_variant(net, variant)
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
        arguments["dropout"] = {
            k: v for k, v in (model.get("dropout") or {}).items() if k != "sites"
        }
        net = targets.build("model", arguments, (), targets.model_inputs(input_shape, n_classes))
    sites = (model.get("dropout") or {}).get("sites")
    if sites:
        try:
            set_site_rates(net, sites)
        except ValueError as error:
            raise ConfigError("model.dropout.sites", dict(sites), str(error)) from None
    return net


def model_constraint(model: Mapping[str, Any], net: nn.Module) -> Callable[[], None] | None:
    """Max-norm, run after each optimizer step: droptune's models constrain their own hidden
    layers; a user's model gets it on the layers `model.max_norm_layers` selects."""
    if model.get("max_norm") is None:
        return None
    if model["family"] in OWN_FAMILIES:
        return net.apply_max_norm
    return MaxNorm(net, constrained_layers(model, net), model["max_norm"])


def constrained_layers(model: Mapping[str, Any], net: nn.Module) -> list[str]:
    try:
        return max_norm_layers(net, model.get("max_norm_layers"))
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
    if model.get("max_norm") is not None:
        # droptune's own models constrain every Linear and Conv but the output layer, as here
        own = model["family"] in OWN_FAMILIES
        layers = max_norm_layers(net, None) if own else constrained_layers(model, net)
    return ModelSites(find_sites(net), layers)


def build_optim(optim: Mapping[str, Any]) -> Optim:
    ramp = optim.get("momentum_ramp")
    fields = {k: v for k, v in optim.items() if k in Optim.__dataclass_fields__}
    fields["momentum_ramp"] = MomentumRamp(**ramp) if ramp is not None else None
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return Optim(**fields)
