"""The LightningModule: loss, the metric contract, optimizer, schedule, momentum ramp, max-norm.

Epoch metrics are computed here once per epoch (one host sync) and kept in `history`, which the
fit's sinks (tracking, pruning, the log) read; they are not passed through `self.log`, whose
result collection cost ~5 ms an epoch (a third of a Sonar epoch). The metric contract: train/loss, train/acc
(running, dropout on), train/acc_eval (dropout off, on a training sample the size of the validation
set), val/loss, val/acc, val/acc_best, gap/acc (train/acc_eval - val/acc: overfitting), test/loss,
test/acc.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from droptune.data.module import Steps

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "exponential")


@dataclass(frozen=True)
class MomentumRamp:
    """Linear momentum ramp over the first `epochs` epochs (the dropout paper: 0.5 -> 0.99)."""

    start: float = 0.5
    end: float = 0.99
    epochs: int = 10

    def at(self, epoch: int) -> float:
        fraction = min(1.0, epoch / max(1, self.epochs))
        return self.start + (self.end - self.start) * fraction


@dataclass(frozen=True)
class Optim:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "none"
    gamma: float = 0.95
    momentum_ramp: MomentumRamp | None = None


def make_scheduler(
    optimizer: torch.optim.Optimizer, optim: Optim, max_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """optim.schedule as torch's scheduler, stepped once per epoch (None: a constant rate)."""
    if optim.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs))
    if optim.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=optim.gamma)
    return None


def make_optimizer(
    params: Iterable[nn.Parameter], o: Optim, device: torch.device
) -> torch.optim.Optimizer:
    """optim.name's torch optimizer; on a GPU its fused kernel (one for all parameters)."""
    fused = device.type == "cuda"
    if o.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
            fused=fused,
        )
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=fused)


def lr_factors(optim: Optim, max_epochs: int) -> list[float]:
    """Each epoch's learning-rate factor under optim.schedule, from torch's own schedulers, for
    an optimizer that is not a torch one (the fused runner's): they drive a stand-in at lr 1."""
    stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = make_scheduler(stand_in, optim, max_epochs)
    factors = []
    for _ in range(max_epochs):
        factors.append(stand_in.param_groups[0]["lr"])
        if scheduler is not None:
            stand_in.step()  # a no-op (no gradients); torch expects it before the schedule's
            scheduler.step()
    return factors


def random_state() -> dict[str, Any]:
    """The generators dropout masks come from, saved so a resumed fit draws the masks it would
    have drawn."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"rng": torch.get_rng_state(), "cuda_rng": cuda}


def restore_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


@dataclass(frozen=True)
class GradientClip:
    """trainer.gradient_clip_val / _algorithm, applied by the module (Lightning clips only for
    modules it steps itself)."""

    value: float
    algorithm: str | None = None  # norm (Lightning's default) | value


class DropoutClassifier(L.LightningModule):
    """Wraps any classifier nn.Module; `constraint` (max-norm) runs after every optimizer step,
    by default the model's own `apply_max_norm()` where it has one.

    It steps its optimizer itself, once per mini-batch of a `Steps` batch (data/module.py): one
    Lightning batch is many steps, which takes Lightning's per-batch cost off every step. Every
    step, its order and its random draws are those of one step per Lightning batch."""

    def __init__(
        self,
        model: nn.Module,
        n_classes: int,
        optim: Optim = Optim(),
        constraint: Callable[[], None] | None = None,
        gradient_clip: GradientClip | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model, self.optim, self.gradient_clip = model, optim, gradient_clip
        self.constraint = constraint or getattr(model, "apply_max_norm", None)
        # validate_args=False: the check of label values reads them on the host, a device sync
        # per step; the labels come from our own data module
        self.train_acc, self.val_acc, self.train_eval_acc, self.test_acc = (
            MulticlassAccuracy(n_classes, average="micro", validate_args=False) for _ in range(4)
        )
        self.history: list[dict[str, float]] = []
        self.best_val_acc = float("-inf")
        self.resumed_from_epoch = 0
        self._sums: dict[str, tuple[torch.Tensor, int]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _accumulate(self, stage: str, loss: torch.Tensor, n: int) -> None:
        """Sum losses on the device; read once per epoch instead of once per step."""
        total, count = self._sums.get(stage, (0.0, 0))
        self._sums[stage] = (loss.detach() * n + total, count + n)

    def _mean_loss(self, stage: str) -> float:
        total, count = self._sums.pop(stage)
        return float(total) / count

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, metric) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self._accumulate(stage, loss, len(y))
        metric.update(logits.detach(), y)
        return loss

    def training_step(self, batch: Steps | tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """Each mini-batch: forward, backward, clip, step, then max-norm's projection right after
        the step. A DataLoader's batch (a streamed or user's DataModule) is one step. The running
        accuracy is updated once per run of steps (its update costs as much as a small step's
        arithmetic)."""
        optimizer = self.optimizers()
        # at full precision Lightning's backward and step only call hooks droptune leaves empty:
        # the tensors' own calls skip ~0.3 ms of hooks per step (a 2-core CPU); mixed precision
        # keeps Lightning's, which scale the loss and cast
        direct = type(self.trainer.precision_plugin) is Precision
        predicted, targets = [], []
        for x, y in batch if isinstance(batch, Steps) else [batch]:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self._accumulate("train", loss, len(y))
            predicted.append(logits.detach().argmax(1))
            targets.append(y)
            optimizer.zero_grad()
            if direct:
                loss.backward()
            else:
                self.manual_backward(loss)
            if self.gradient_clip is not None:
                clip = self.gradient_clip
                self.clip_gradients(optimizer, clip.value, clip.algorithm)
            (optimizer.optimizer if direct else optimizer).step()
            if self.constraint is not None:
                self.constraint()
        self.train_acc.update(torch.cat(predicted), torch.cat(targets))
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.trainer.is_last_batch:
            scheduler.step()  # where Lightning steps an epoch schedule: before validation

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:
            self._step(batch, "val", self.val_acc)
        else:  # the training probe: accuracy with dropout off
            x, y = batch
            self.train_eval_acc.update(self.model(x), y)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def on_train_epoch_start(self) -> None:
        ramp = self.optim.momentum_ramp
        if ramp is None:
            return
        momentum = ramp.at(self.current_epoch)
        for group in self.trainer.optimizers[0].param_groups:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum

    def on_validation_epoch_end(self) -> None:
        # Validation runs after the epoch's last training batch, so both halves are complete here.
        epoch_metrics = (self.train_acc, self.val_acc, self.train_eval_acc)
        if self.trainer.sanity_checking or "train" not in self._sums:
            self._sums.pop("val", None)
            for metric in epoch_metrics:
                metric.reset()
            return
        # a user's DataModule gives no training probe (a second validation loader): no gap then
        probed = self.train_eval_acc.update_called
        train_acc, val_acc = self.train_acc.compute().item(), self.val_acc.compute().item()
        train_eval_acc = self.train_eval_acc.compute().item() if probed else None
        for metric in epoch_metrics:
            metric.reset()
        self.best_val_acc = max(self.best_val_acc, val_acc)
        metrics = {
            "train/loss": self._mean_loss("train"),
            "train/acc": train_acc,
            "val/loss": self._mean_loss("val"),
            "val/acc": val_acc,
            "val/acc_best": self.best_val_acc,
        }
        if probed:
            metrics |= {"train/acc_eval": train_eval_acc, "gap/acc": train_eval_acc - val_acc}
        self.history.append(metrics)

    def on_test_epoch_end(self) -> None:
        metrics = {"test/loss": self._mean_loss("test"), "test/acc": self.test_acc.compute().item()}
        self.test_acc.reset()
        self.log_dict(metrics)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["droptune"] = {
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            **random_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming a trial keeps its curves and best-so-far: they are part of its result."""
        state = checkpoint["droptune"]
        self.history = list(state["history"])
        self.best_val_acc = state["best_val_acc"]
        self.resumed_from_epoch = len(self.history)
        restore_random_state(state)

    def configure_optimizers(self):
        optimizer = make_optimizer(self.model.parameters(), self.optim, self.device)
        scheduler = make_scheduler(optimizer, self.optim, self.trainer.max_epochs)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
