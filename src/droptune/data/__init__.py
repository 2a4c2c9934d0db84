"""Datasets (load, download, verify), splits, k-fold and a device-resident DataModule.

Nothing here imports optuna, hydra or mlflow.
"""

from droptune.data.datasets import DATASETS, Arrays, load
from droptune.data.download import DataFileError, fetch
from droptune.data.module import (
    STEPS_PER_BATCH,
    IndexBatches,
    Steps,
    TensorDataModule,
    holdout_test,
    kfold_indices,
    train_val_indices,
)

__all__ = [
    "DATASETS",
    "STEPS_PER_BATCH",
    "Steps",
    "Arrays",
    "DataFileError",
    "IndexBatches",
    "TensorDataModule",
    "fetch",
    "holdout_test",
    "kfold_indices",
    "load",
    "train_val_indices",
]
