"""A config's `_target_`: resolved with Hydra, its inputs filled from what droptune knows.

A user's class or factory gets the input shape, the number of classes (and, for a LightningModule,
the learning rate) as constructor arguments when its signature names them, so the same class works
on any dataset without a config key per dataset.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from hydra.utils import get_object, instantiate

from droptune.data.streamed import Streamed
from droptune.errors import ConfigError

# keys of data=custom that droptune reads; every other key is an argument of its _target_
USER_DATA_KEYS = (
    "name",
    "input_shape",
    "n_classes",
    "batch_size",
    "val_fraction",
    "test_fraction",
    "standardize",
    "cv_folds",
)


def resolve(key: str, target: Any) -> Any:
    """The object a dotted `_target_` names; the working directory is importable (as for
    `python -m`), so a package beside the project needs no install."""
    if not isinstance(target, str) or not target:
        raise ConfigError(key, target, "a dotted path to a class or function (mypkg.nets.Net)")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    hydra_log = logging.getLogger("hydra.utils")  # it logs each failure as an ERROR of its own
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        return get_object(target)
    except Exception as error:
        cause = error.__cause__ or error
        reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
        raise ConfigError(key, target, f"an importable class or function ({reason})") from None
    finally:
        hydra_log.setLevel(level)


def _parameters(target: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: fill nothing
        return {}


def model_inputs(
    input_shape: Sequence[int], n_classes: int, lr: float | None = None
) -> dict[str, Any]:
    """What droptune offers a model's constructor, by the names constructors commonly use."""
    offered = {
        "input_shape": tuple(input_shape),
        "in_features": math.prod(input_shape),
        "in_dim": math.prod(input_shape),
        "input_dim": math.prod(input_shape),
        "in_channels": input_shape[0],
        "n_classes": n_classes,
        "num_classes": n_classes,
    }
    return offered | ({"lr": lr, "learning_rate": lr} if lr is not None else {})


def build(
    key: str, config: Mapping[str, Any], own_keys: Sequence[str], offered: Mapping[str, Any]
) -> Any:
    """Instantiate `config` (its `_target_` with every key but `own_keys` as arguments), adding
    the `offered` arguments its signature names and the config does not set."""
    target = resolve(f"{key}._target_", config.get("_target_"))
    arguments = {k: v for k, v in config.items() if k not in own_keys}
    names = _parameters(target)
    filled = {k: v for k, v in offered.items() if k in names and k not in arguments}
    try:
        return instantiate(arguments, _convert_="all", **filled)
    except Exception as error:  # the user's constructor refused its arguments
        cause = error.__cause__ or error
        reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
        raise ConfigError(f"{key}._target_", config["_target_"], reason) from error


def _attribute(datamodule: L.LightningDataModule, names: Sequence[str]) -> Any:
    return next((getattr(datamodule, n) for n in names if getattr(datamodule, n, None)), None)


def user_data(data: Mapping[str, Any]) -> Streamed:
    """data=custom: the user's LightningDataModule, built anew for each fit (its batch size may be
    searched), its loaders and split its own. The input shape and number of classes come from
    the config keys, else from its attributes (input_shape / dims, n_classes / num_classes), else
    the shape from its first training batch."""

    def datamodule(train_index, val_index, batch_size: int, seed: int) -> L.LightningDataModule:
        built = build("data", data, USER_DATA_KEYS, {"batch_size": batch_size, "seed": seed})
        if not isinstance(built, L.LightningDataModule):
            raise ConfigError("data._target_", data["_target_"], "a LightningDataModule class")
        return built

    probe = datamodule(None, None, data["batch_size"], 0)
    if type(probe).val_dataloader is L.LightningDataModule.val_dataloader:
        raise ConfigError(
            "data._target_",
            data["_target_"],
            f"a LightningDataModule with a val_dataloader: {type(probe).__name__} has none, and "
            "every epoch is scored on the validation part (val/acc, the study's metric)",
        )
    shape = data["input_shape"] or _attribute(probe, ("input_shape", "dims"))
    n_classes = data["n_classes"] or _attribute(probe, ("n_classes", "num_classes"))
    if shape is None or n_classes is None:
        probe.prepare_data()
        probe.setup("fit")
        shape = shape or _attribute(probe, ("input_shape", "dims"))
        n_classes = n_classes or _attribute(probe, ("n_classes", "num_classes"))
        if shape is None:
            shape = tuple(next(iter(probe.train_dataloader()))[0].shape[1:])
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ConfigError(
            "data.n_classes",
            n_classes,
            f"the number of classes (>= 2): {type(probe).__name__} has no n_classes attribute",
        )
    has_test = type(probe).test_dataloader is not L.LightningDataModule.test_dataloader
    classes = [str(c) for c in range(n_classes)]
    return Streamed(classes, tuple(int(d) for d in shape), None, has_test, datamodule)
