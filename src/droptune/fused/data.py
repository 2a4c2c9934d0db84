"""A group's data: every split its members train on (one, or each fold of each seed), resident on
the device, each standardised on its own training part, padded to one shape per part.

A member reads its split's rows only: batches and evaluation weigh padded rows 0, so a member of a
10-fold group sees exactly its fold's 187 training and 21 validation rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from droptune import data as ds
from droptune.inputs import Split

PARTS = ("train", "val", "train_probe", "test")


@dataclass
class Part:
    """One part of every split: rows (S, N, D) and labels (S, N), padded to the longest split's
    N, and each split's own row count (S,)."""

    x: torch.Tensor
    y: torch.Tensor
    rows: torch.Tensor

    @classmethod
    def stack(cls, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> Part:
        longest = max(len(y) for _, y in parts)
        x = torch.stack([F.pad(x.flatten(1), (0, 0, 0, longest - len(x))) for x, _ in parts])
        y = torch.stack([F.pad(y, (0, longest - len(y))) for _, y in parts])
        rows = torch.tensor([len(y) for _, y in parts], device=y.device)
        return cls(x, y, rows)

    def gather(
        self, split_of: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Members' rows (K, B, D) and labels (K, B) at `index` (K, B) of their own splits."""
        if len(self.rows) == 1:  # one split: index its rows directly, no (K, N) gather table
            return self.x[0][index], self.y[0][index]
        rows = split_of[:, None]
        return self.x[rows, index], self.y[rows, index]

    def window(
        self, split_of: torch.Tensor, start: int, end: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows start:end of each member's split (K, b, D), their labels (K, b) and which of them
        are the split's own (K, b), for evaluation in chunks."""
        if len(self.rows) == 1:  # shared by all: a view, not K copies
            k = len(split_of)
            x, y = self.x[0, start:end], self.y[0, start:end]
            x, y = x.expand(k, *x.shape), y.expand(k, -1)
        else:
            x, y = self.x[:, start:end][split_of], self.y[:, start:end][split_of]
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        return x, y, positions < self.rows[split_of][:, None]


class StackedData:
    """Each split's parts, built as the standard runner builds one fit's (TensorDataModule, the
    study's cache shared), then padded and stacked. `seeds`: each split's config seed (a report
    stacks several seeds' splits; the train probe is drawn with it)."""

    def __init__(
        self,
        arrays: ds.Arrays,
        splits: list[Split],
        *,
        standardize: bool,
        seeds: Sequence[int],
        device: torch.device,
        cache: dict | None = None,
    ) -> None:
        built = []
        for (train_index, val_index), seed in zip(splits, seeds, strict=True):
            module = ds.TensorDataModule(
                arrays, train_index, val_index, 1, standardize=standardize, seed=seed, cache=cache
            )
            module.setup_on(device)
            built.append(module.tensors)
        self.parts = {
            name: Part.stack([tensors[name] for tensors in built])
            for name in PARTS
            if name in built[0]
        }
        self.in_dim = self.parts["train"].x.shape[2]

    def __contains__(self, part: str) -> bool:
        return part in self.parts

    def __getitem__(self, part: str) -> Part:
        return self.parts[part]

    def steps(self, split: int, batch_size: int) -> int:
        """Optimizer steps an epoch of the split takes."""
        return -(-int(self.parts["train"].rows[split]) // batch_size)
