"""What a config's fits train on: its data (resident arrays or a streamed source) and its splits."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from droptune import data as ds
from droptune import targets
from droptune.data.folders import FolderSpec, load_image_folder
from droptune.data.streamed import Streamed

log = logging.getLogger("droptune")

Data = ds.Arrays | Streamed
Split = tuple[np.ndarray | None, np.ndarray | None]  # train and validation row indices


def holdout_seed(cfg: Mapping[str, Any]) -> int:
    """What seeds a held-out test split: `test_seed`, or the run's seed. A report's retrains
    train on other seeds but test on the study's own held-out examples, which nothing saw."""
    return cfg["seed"] if cfg["test_seed"] is None else cfg["test_seed"]


def load_data(cfg: Mapping[str, Any]) -> Data:
    """Resident arrays (a dataset, a CSV, an image folder that fits) or a streamed source."""
    d = cfg["data"]
    if d["name"] == "custom":
        return targets.user_data(d)
    if d["name"] == "image_folder":
        keys = ("root", "image_size", "mode", "max_resident_bytes", "num_workers")
        spec = FolderSpec(**{k: d[k] for k in keys})
        loaded = load_image_folder(spec, d["test_fraction"], holdout_seed(cfg))
        if isinstance(loaded, Streamed):
            log.info("%s does not fit in data.max_resident_bytes: streamed from disk", spec.root)
            return loaded
        return ds.holdout_test(loaded, d["test_fraction"], holdout_seed(cfg))
    arrays = ds.load(
        d["name"],
        cfg["paths"]["data_dir"],
        # keys of some datasets' groups only: csv's and digits' have no mirrors, only csv a path
        mirrors=d.get("mirrors", ()),
        path=d.get("path"),
        target=d.get("target"),
        features=d.get("features"),
    )
    if "test_fraction" not in d:  # MNIST and Fashion-MNIST: their own test set
        return arrays
    return ds.holdout_test(arrays, d["test_fraction"], holdout_seed(cfg))


def splits(cfg: Mapping[str, Any], arrays: Data) -> list[Split]:
    """One train/val split, or data.cv_folds stratified folds of the training set (a user's
    DataModule splits its own data: one fold of no indices)."""
    d = cfg["data"]
    if arrays.y_train is None:
        return [(None, None)]
    if d["cv_folds"]:
        return ds.kfold_indices(arrays.y_train, d["cv_folds"], cfg["seed"], arrays.classes)
    return [ds.train_val_indices(arrays.y_train, d["val_fraction"], cfg["seed"], arrays.classes)]
