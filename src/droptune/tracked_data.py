"""What a run trained on, as an MLflow dataset input: the runs table's Dataset column and the run
page name the data, its digest and its split sizes.

mlflow.data's NumPy dataset hashes only the first 10,000 values of each array and profiles
shapes, not splits; the entity is built here from an exact digest and droptune's own splits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag

from droptune.data import Arrays
from droptune.inputs import Data, Split

DIGEST_CHARS = 12


def dataset_input(data_cfg: Mapping[str, Any], data: Data, folds: Sequence[Split]) -> DatasetInput:
    """The dataset every run of a config trains on: name, digest of the data and split sizes,
    where it came from, and its split sizes as the profile the UI shows."""
    profile = _split_sizes(data, folds)
    digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode())
    if isinstance(data, Arrays):
        for part in (data.x_train, data.y_train, data.x_test, data.y_test):
            if part is not None:
                digest.update(part.tobytes())
    else:  # streamed: its files are not read here; the config names them
        digest.update(json.dumps(dict(data_cfg), sort_keys=True, default=str).encode())
    source_type, source = _source(data_cfg)
    dataset = Dataset(
        name=_name(data_cfg),
        digest=digest.hexdigest()[:DIGEST_CHARS],
        source_type=source_type,
        source=json.dumps(source),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def _name(data_cfg: Mapping[str, Any]) -> str:
    if data_cfg["name"] == "csv":
        return f"csv:{str(data_cfg['path']).rsplit('/', 1)[-1]}"
    if data_cfg["name"] == "custom":
        return data_cfg["_target_"].rsplit(".", 1)[-1]
    return data_cfg["name"]


def _source(data_cfg: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    name = data_cfg["name"]
    if name in ("csv", "image_folder"):
        return "local", {"uri": str(data_cfg.get("path") or data_cfg.get("root"))}
    if name == "custom":
        return "code", {"target": data_cfg["_target_"]}
    if name == "digits":
        return "code", {"loader": "sklearn.datasets.load_digits"}
    return "http", {"url": data_cfg["mirrors"][0]}  # mnist, fashion_mnist, sonar


def _split_sizes(data: Data, folds: Sequence[Split]) -> dict[str, Any]:
    """Rows of each part: one split's train / validation, or k folds' (the mean fold)."""
    train_index, val_index = folds[0]
    sizes: dict[str, Any] = {"classes": len(data.classes), "input_shape": list(data.input_shape)}
    if train_index is not None:
        sizes["train"] = len(train_index)
        sizes["validation"] = len(val_index)
    if len(folds) > 1:
        sizes["folds"] = len(folds)
    if isinstance(data, Arrays) and data.x_test is not None:
        sizes["test"] = len(data.x_test)
    return sizes
