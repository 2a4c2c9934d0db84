"""Data read through DataLoaders every epoch: an image folder too large to be resident, or a user's
own LightningDataModule. Resident data (arrays.py's Arrays) is the fast path; this is the one that
fits any size and any source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

# (train_index, val_index, batch_size, seed) -> the DataModule of one fit. The indices are those
# of `y_train` (a split droptune made), or None where the source splits itself.
MakeDataModule = Callable[[np.ndarray | None, np.ndarray | None, int, int], L.LightningDataModule]


@dataclass
class Streamed:
    """A dataset droptune does not hold: what a fit needs to know of it, and how to open it."""

    classes: list[str]
    input_shape: tuple[int, ...]
    y_train: np.ndarray | None  # labels of the training part (stratified splits); None: its own
    has_test: bool
    datamodule: MakeDataModule


class SplitImages(L.LightningDataModule):
    """Train / val / training probe / test parts of one image dataset, by index, streamed: the
    same loaders TensorDataModule gives (validation, then the probe as dataloader_idx 1)."""

    def __init__(
        self,
        dataset: Dataset,
        parts: dict[str, np.ndarray],
        batch_size: int,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.dataset, self.parts = dataset, parts
        self.batch_size, self.num_workers = batch_size, num_workers
        self.generator = torch.Generator().manual_seed(seed)

    def _loader(self, part: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            Subset(self.dataset, self.parts[part].tolist()),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=self.generator if shuffle else None,
            num_workers=self.num_workers,
        )

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.generator.set_state(state_dict["generator"])

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader("val"), self._loader("train_probe")]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def probe_index(train_index: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed sample of the training part as large as the validation part (TensorDataModule's)."""
    order = np.random.default_rng(seed).permutation(len(train_index))
    return train_index[np.sort(order[:size])]
