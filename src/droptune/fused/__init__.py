"""The fused runner: K trials trained in one fit, their parameters stacked along a member axis.

Small dropout-study MLPs leave a GPU nearly idle one at a time; stacked, one step updates every
member with batched matmuls. A group shares what one fit must: model family (MLP), depth, a width
band, activation, optimizer and schedule, batch size and epochs. Everything else a trial samples is
per member: widths, dropout placement, variant and rates at every site, lr, momentum, weight decay,
max-norm c, initialisation, data order and dropout masks. Pruned or failed members leave the group
at the end of an epoch, and the stacked tensors shrink with them.

grouping (which trials share a fit) -> fit (one group's fit: `train_group`) -> module (the
LightningModule of a group) + checkpoint (a member's own state) -> runner (groups to outcomes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from droptune.build import mlp_widths
from droptune.data import Arrays

# On a CPU a member's step costs its arithmetic plus a share of the masks and the update; the
# standard runner's step, its arithmetic plus about a millisecond of fixed cost. Stacking wins while
# the fixed cost dominates: measured on a 2-core CPU (`make bench`'s cpu_rule rows), 2.5x at 0.13M
# multiply-accumulates a member-step (Sonar's MLP), 1.7x at 1.3M, 1.6x at 2.7M (digits), 1.2x at 15M
# (Fashion-MNIST 784-128-128-10) and 0.8x at 18M. The bound keeps a margin below the crossing.
CPU_STACKING_MACS = 4_000_000


def step_macs(config: Mapping[str, Any], arrays: Arrays) -> int:
    """Multiply-accumulates of one member's forward pass over one batch: batch x weights."""
    sizes = [int(np.prod(arrays.input_shape)), *mlp_widths(config["model"]), len(arrays.classes)]
    return config["data"]["batch_size"] * sum(
        a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    )


@dataclass(frozen=True)
class RunnerChoice:
    """What `study.runner` / `report.runner` resolved to, and why (recorded on the study's run).
    `max_macs`: on a CPU under auto, trials above it train on the standard runner."""

    fused: bool
    reason: str
    max_macs: int | None = None

    def stacks(self, config: Mapping[str, Any], arrays: Arrays) -> bool:
        """Whether a trial or retrain of `config` trains stacked under this choice."""
        return self.fused and (self.max_macs is None or step_macs(config, arrays) <= self.max_macs)


def choose_runner(runner: str, config: Mapping[str, Any], arrays: Any) -> RunnerChoice:
    """fused, standard, or auto: fused on a GPU (98x the reference loop on an H200); on a CPU,
    fused where a member-step of the config is below CPU_STACKING_MACS. `arrays` other than
    Arrays: data the fused runner cannot hold (a user's datamodule)."""
    if runner != "auto":
        return RunnerChoice(runner == "fused", f"study.runner={runner}")
    if config["model"]["family"] != "mlp" or not isinstance(arrays, Arrays):
        return RunnerChoice(False, "auto: the fused runner stacks droptune's MLP on resident data")
    if config["trainer"]["accelerator"] != "cpu" and torch.cuda.is_available():
        return RunnerChoice(True, "auto: a GPU")
    macs = step_macs(config, arrays)
    verdict = "<=" if macs <= CPU_STACKING_MACS else ">"
    reason = (
        f"auto: a CPU, {macs:,} multiply-accumulates a member-step {verdict} {CPU_STACKING_MACS:,}"
    )
    return RunnerChoice(macs <= CPU_STACKING_MACS, reason, CPU_STACKING_MACS)
