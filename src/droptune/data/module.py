"""Splits and a LightningDataModule whose tensors live on the training device.

Batches are taken by index from device-resident tensors: no per-sample Python, no workers. Scaling
is fitted on the training part only, so validation and test stay unseen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from droptune.data.datasets import Arrays
from droptune.data.streamed import probe_index
from droptune.errors import ConfigError


def _smallest_class(labels: np.ndarray) -> tuple[int, int]:
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    smallest = present[np.argmin(counts[present])]
    return int(smallest), int(counts[smallest])


@contextmanager
def stratifiable(
    key: str, value: Any, labels: np.ndarray, classes: Sequence[str]
) -> Iterator[None]:
    """scikit-learn's refusal of a stratified split, as one line naming the key and the class
    too small for it."""
    try:
        yield
    except ValueError as error:
        index, count = _smallest_class(labels)
        raise ConfigError(
            key,
            value,
            f"a split every class can fill: class {classes[index]!r} has {count} row(s) of "
            f"{len(labels)} ({error})",
        ) from None


def holdout_test(arrays: Arrays, test_fraction: float, seed: int) -> Arrays:
    """Give a dataset without a test set a seeded, stratified one (test_fraction 0: none)."""
    if arrays.x_test is not None or test_fraction == 0:
        return arrays
    with stratifiable("data.test_fraction", test_fraction, arrays.y_train, arrays.classes):
        x_train, x_test, y_train, y_test = train_test_split(
            arrays.x_train,
            arrays.y_train,
            test_size=test_fraction,
            stratify=arrays.y_train,
            random_state=seed,
        )
    return Arrays(
        x_train, y_train, x_test, y_test, arrays.classes, arrays.input_shape, arrays.pixel_max
    )


def train_val_indices(
    labels: np.ndarray, val_fraction: float, seed: int, classes: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified split of the training set into train and validation indices."""
    indices = np.arange(len(labels))
    names = list(classes) or [str(c) for c in range(labels.max() + 1)]
    with stratifiable("data.val_fraction", val_fraction, labels, names):
        train, val = train_test_split(
            indices, test_size=val_fraction, stratify=labels, random_state=seed
        )
    return np.sort(train), np.sort(val)


def kfold_indices(
    labels: np.ndarray, folds: int, seed: int, classes: Sequence[str] = ()
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (shuffled, seeded): each sample is validated exactly once."""
    names = list(classes) or [str(c) for c in range(labels.max() + 1)]
    index, count = _smallest_class(labels)
    if count < folds:  # scikit-learn only warns, and folds then miss the class
        raise ConfigError(
            "data.cv_folds",
            folds,
            f"at most {count} folds: class {names[index]!r} has {count} row(s), one per fold",
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


# Lightning's per-batch machinery (hooks, loop state, an optimizer wrapper) costs host time
# comparable to a whole step of a small MLP (~2.5 ms a step on a 2-core CPU), so droptune's own
# modules take this many training steps per Lightning batch
STEPS_PER_BATCH = 16


class Steps(list):
    """Consecutive training mini-batches [(x, y), ...] handed to a module as one Lightning batch:
    droptune's modules step their optimizer once per pair."""


class IndexBatches:
    """Mini-batches gathered by index from tensors already on the device; with `steps`, runs of
    that many batches as one `Steps` each."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        generator: torch.Generator | None = None,
        steps: int | None = None,
    ) -> None:
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator
        self.steps = steps

    def __len__(self) -> int:
        batches = -(-len(self.y) // self.batch_size)
        return batches if self.steps is None else -(-batches // self.steps)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor] | Steps]:
        if self.steps is None:
            yield from self._batches()
            return
        run = Steps()
        for batch in self._batches():
            run.append(batch)
            if len(run) == self.steps:
                yield run
                run = Steps()
        if run:
            yield run

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.generator is None:
            for start in range(0, n, self.batch_size):
                yield (
                    self.x[start : start + self.batch_size],
                    self.y[start : start + self.batch_size],
                )
            return
        order = torch.randperm(n, generator=self.generator).to(self.y.device)
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            yield self.x[batch], self.y[batch]


class TensorDataModule(L.LightningDataModule):
    """Train/val (one split or one CV fold) and test, standardised, resident on the device."""

    def __init__(
        self,
        arrays: Arrays,
        train_index: np.ndarray,
        val_index: np.ndarray,
        batch_size: int,
        eval_batch_size: int = 4096,
        standardize: bool = True,
        seed: int = 0,
        cache: dict | None = None,
        train_probe: bool = True,
        steps_per_batch: int | None = None,
    ) -> None:
        """`cache`, shared by the fits of one study, keeps the prepared tensors: every trial of a
        study uses the same splits, so scaling and the copy to the device happen once, not per trial.
        `train_probe`: validation also gives the training probe (dataloader_idx 1).
        `steps_per_batch`: training batches come in `Steps` of this many (droptune's modules),
        or one by one (None: a user's LightningModule)."""
        super().__init__()
        self.cache = cache
        self.arrays = arrays
        self.train_index, self.val_index = train_index, val_index
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.standardize, self.seed, self.train_probe = standardize, seed, train_probe
        self.steps_per_batch = steps_per_batch
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.generator = torch.Generator().manual_seed(seed)  # the training order

    def _scaler(self):
        """A function raw -> float32 features, fitted on the training part only."""
        a = self.arrays
        fit_part = a.x_train[self.train_index]
        if a.pixel_max is not None:
            scaled = fit_part.astype(np.float32) / a.pixel_max
            mean, std = (scaled.mean(), scaled.std() or 1.0) if self.standardize else (0.0, 1.0)
            return lambda x: ((x.astype(np.float32) / a.pixel_max - mean) / std).astype(np.float32)
        if not self.standardize:
            return lambda x: x.astype(np.float32)
        scaler = StandardScaler().fit(fit_part)
        return lambda x: scaler.transform(x).astype(np.float32)

    def setup(self, stage: str | None = None) -> None:
        self.setup_on(self.trainer.strategy.root_device if self.trainer else torch.device("cpu"))

    def setup_on(self, device: torch.device) -> None:
        """The split's tensors on `device` (from the cache when a fit of the study made them)."""
        if self.tensors:
            return
        split = hashlib.sha1(self.train_index.tobytes() + self.val_index.tobytes()).hexdigest()
        key = (str(device), self.standardize, self.seed, split)
        if self.cache is not None and key in self.cache:
            self.tensors = self.cache[key]
            return
        scale = self._scaler()
        a = self.arrays

        def on_device(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(scale(x)).to(device), torch.from_numpy(y).to(device)

        self.tensors["train"] = on_device(a.x_train[self.train_index], a.y_train[self.train_index])
        self.tensors["val"] = on_device(a.x_train[self.val_index], a.y_train[self.val_index])
        # A fixed sample of the training part, as large as the validation part, evaluated like it
        # (dropout off) so that train - val accuracy measures overfitting, not dropout's noise.
        probe = probe_index(self.train_index, len(self.val_index), self.seed)
        self.tensors["train_probe"] = on_device(a.x_train[probe], a.y_train[probe])
        if a.x_test is not None:
            self.tensors["test"] = on_device(a.x_test, a.y_test)
        if self.cache is not None:
            self.cache[key] = self.tensors

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        """A resumed fit continues the same sequence of shuffles."""
        self.generator.set_state(state_dict["generator"])

    def train_dataloader(self) -> IndexBatches:
        return IndexBatches(
            *self.tensors["train"], self.batch_size, self.generator, steps=self.steps_per_batch
        )

    def val_dataloader(self) -> list[IndexBatches]:
        """The validation part, then the training probe (dataloader_idx 1)."""
        val = IndexBatches(*self.tensors["val"], self.eval_batch_size)
        if not self.train_probe:
            return [val]
        return [val, IndexBatches(*self.tensors["train_probe"], self.eval_batch_size)]

    def test_dataloader(self) -> IndexBatches:
        if "test" not in self.tensors:
            raise RuntimeError("this dataset has no test set (data.test_fraction=0)")
        return IndexBatches(*self.tensors["test"], self.eval_batch_size)
