"""A fused member's own state, saved unpadded, so a retried trial resumes in any group."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from droptune.models.stacked import StackedMLP
from droptune.models.stacked_optim import StackedOptimizer

Slice = tuple[int, slice, slice]


@dataclass
class MemberCheckpoint:
    """Epochs done, optimizer steps taken, the curves so far, and the member's own rows of every
    stacked parameter and optimizer slot (CPU tensors, in `parameters()` order)."""

    epoch: int
    steps: int
    history: list[dict[str, float]]
    params: list[torch.Tensor]
    state: list[list[torch.Tensor]]

    def save(self, path: Path) -> None:
        """Atomically: a kill mid-write leaves the previous checkpoint readable."""
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(path.name + ".tmp")
        torch.save(dataclasses.asdict(self), staged)
        os.replace(staged, path)

    @classmethod
    def load(cls, path: Path | None) -> MemberCheckpoint | None:
        """The state saved at `path`, or None when there is none."""
        if path is None or not path.exists():
            return None
        return cls(**torch.load(path, map_location="cpu"))


def member_slices(net: StackedMLP, row: int, widths: Sequence[int]) -> list[Slice]:
    """Row `row`'s own (unpadded) part of each stacked parameter, as parameters() lists them."""
    sizes = [net.weights[0].shape[2], *widths, net.weights[-1].shape[1]]
    weights = [
        (row, slice(0, fan_out), slice(0, fan_in)) for fan_in, fan_out in itertools.pairwise(sizes)
    ]
    biases = [(row, slice(None), slice(0, fan_out)) for fan_out in sizes[1:]]
    return weights + biases


def snapshot(
    net: StackedMLP,
    optimizer: StackedOptimizer,
    slices: Sequence[Slice],
    history: list[dict[str, float]],
) -> MemberCheckpoint:
    """One member's state, copied to the CPU."""
    parameters = net.parameters()
    return MemberCheckpoint(
        epoch=len(history),
        steps=int(net.step),
        history=history,
        params=[p.detach()[index].cpu() for index, p in zip(slices, parameters, strict=True)],
        state=[
            [value[index].cpu() for value in slot]
            for index, slot in zip(slices, optimizer.state, strict=True)
        ],
    )


@torch.no_grad()
def restore(
    net: StackedMLP,
    optimizer: StackedOptimizer,
    slices: Sequence[Slice],
    saved: MemberCheckpoint,
) -> None:
    """Write a saved member into its row of a freshly built group (steps included)."""
    rows = zip(slices, net.parameters(), optimizer.state, saved.params, saved.state, strict=True)
    for index, p, slot, values, state in rows:
        p[index] = values.to(p)
        for target, value in zip(slot, state, strict=True):
            target[index] = value.to(target)
    # the same for every member of a group: same epochs, same data
    net.step.fill_(saved.steps)
    optimizer.t.fill_(saved.steps)
