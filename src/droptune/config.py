"""Config validation and the builders that turn plain config values into objects.

`validate` runs before any data is loaded or any trial starts, and raises one ConfigError naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from droptune.data.datasets import DATASETS
from droptune.errors import ConfigError
from droptune.lit import OPTIMIZERS, SCHEDULES, MomentumRamp, Optim
from droptune.models import ACTIVATIONS, CNN, MLP, PLACEMENTS, VARIANTS, Dropout

IMAGE_DATASETS = ("mnist", "fashion_mnist", "digits")
FAMILIES = ("mlp", "cnn")


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
    if model.get("widths") is not None:
        return [int(w) for w in model["widths"]]
    return [int(model["width"])] * int(model["depth"])


def validate_data(data: Mapping[str, Any]) -> None:
    _one_of("data.name", data.get("name"), DATASETS)
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
    if data["name"] == "csv":
        _check(bool(data.get("path")), "data.path", data.get("path"), "the path of a CSV file")
        _check(
            bool(data.get("target")), "data.target", data.get("target"), "the label column's name"
        )


def validate_model(model: Mapping[str, Any], dataset: str) -> None:
    _one_of("model.family", model.get("family"), FAMILIES)
    _one_of("model.activation", model.get("activation"), tuple(ACTIVATIONS))
    dropout = model.get("dropout") or {}
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
            dataset in IMAGE_DATASETS,
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
    has_test = cfg["data"]["name"] in ("mnist", "fashion_mnist") or cfg["data"].get(
        "test_fraction", 0
    )
    if cfg.get("evaluate_test"):
        _check(
            bool(has_test),
            "evaluate_test",
            True,
            "only with a test set: data.test_fraction=0 holds none out",
        )


def build_model(model: Mapping[str, Any], input_shape: Sequence[int], n_classes: int):
    """The nn.Module a validated model config describes."""
    dropout = Dropout(**model["dropout"])
    if model["family"] == "mlp":
        return MLP(
            math.prod(input_shape),
            n_classes,
            mlp_widths(model),
            model["activation"],
            dropout,
            model.get("max_norm"),
            model.get("init_std"),
        )
    return CNN(
        input_shape,
        n_classes,
        model["channels"],
        model["kernel_size"],
        model["head_widths"],
        model["activation"],
        model.get("pool", "max"),
        dropout,
        model.get("max_norm"),
        model.get("init_std"),
    )


def build_optim(optim: Mapping[str, Any]) -> Optim:
    ramp = optim.get("momentum_ramp")
    fields = {k: v for k, v in optim.items() if k in Optim.__dataclass_fields__}
    fields["momentum_ramp"] = MomentumRamp(**ramp) if ramp is not None else None
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return Optim(**fields)
