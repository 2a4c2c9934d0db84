"""A user's LightningModule, read from outside: its logged metrics as droptune's epoch history,
and max-norm after each of its optimizer steps.

droptune's own module keeps its history itself (lit.py); a module droptune did not write is only
known by what it logs (`self.log`), which Lightning gathers in `trainer.callback_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from droptune.lit import DropoutClassifier, random_state, restore_random_state


class LoggedMetrics(L.Callback):
    """After each training epoch (its validation done): every scalar the module logged, plus
    val/acc_best when it logs val/acc. Kept in the checkpoint with the random state, so a resumed
    trial has its curves and the dropout masks it would have drawn."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.best_val_acc = -math.inf
        self.resumed_from_epoch = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if isinstance(value, torch.Tensor) and value.numel() == 1
        }
        if "val/acc" in metrics:
            self.best_val_acc = max(self.best_val_acc, metrics["val/acc"])
            metrics["val/acc_best"] = self.best_val_acc
        self.history.append(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            **random_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self.best_val_acc = state_dict["best_val_acc"]
        self.resumed_from_epoch = len(self.history)
        restore_random_state(state_dict)


class ConstraintAfterStep(L.Callback):
    """Runs a constraint (max-norm) after every optimizer step of a module whose steps are its
    own: a training batch ends right after its step (one step per batch, no accumulation)."""

    def __init__(self, constraint: Callable[[], None]) -> None:
        self.constraint = constraint

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.constraint()


def history_source(
    trainer: L.Trainer, module: L.LightningModule
) -> DropoutClassifier | LoggedMetrics:
    """What holds a fit's epoch history (and resumed_from_epoch): droptune's module, or the
    LoggedMetrics callback of a user's."""
    if isinstance(module, DropoutClassifier):
        return module
    return next(c for c in trainer.callbacks if isinstance(c, LoggedMetrics))
