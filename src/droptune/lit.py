"""The LightningModule: loss, the metric contract, optimizer, schedule, momentum ramp, max-norm.

Epoch metrics are computed here once per epoch and kept in `history`, which the fit's sinks
(tracking, pruning, the log) read; they are not passed through `self.log`, whose result collection
cost ~5 ms an epoch (a third of a Sonar epoch). The metric contract: train/loss, train/acc
(running, dropout on), train/acc_eval and train/nll_eval (dropout off, on a training sample the
size of the validation set), val/loss, val/acc, val/acc_best, val/nll (= val/loss: the labels'
mean negative log-likelihood), val/ece (expected calibration error, 15 bins), gap/acc
(train/acc_eval - val/acc: overfitting), gap/nll (val/nll - train/nll_eval), and test/loss,
test/acc, test/nll, test/ece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from torch import nn
from torch.nn import functional as F

from droptune.calibration import calibration_bins, expected_calibration_error
from droptune.data.module import IndexBatches, Steps
from droptune.mc_dropout import mc_log_probabilities
from droptune.models.dropout import ConcreteDropout
from droptune.models.sites import dropout_modules

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


@dataclass(frozen=True)
class Scores:
    loss: float  # mean cross-entropy: the negative log-likelihood of the labels
    acc: float
    # the calibration bins (calibration.py), where the tally keeps them
    bins: torch.Tensor | None = None

    @property
    def ece(self) -> float | None:
        return expected_calibration_error(self.bins).item() if self.bins is not None else None


class EpochTally:
    """Summed loss and correct predictions of one part of an epoch (`calibrated`: and the
    calibration bins, whose correct counts add up to the part's), kept on the device and read
    once. Counted here rather than by torchmetrics' MulticlassAccuracy and CalibrationError, whose
    update and compute cost ~0.2 and ~0.3 ms of Python each on a 2-core CPU: as much as a small
    network's step (the fused runner counts the same way; tests compare with torchmetrics)."""

    def __init__(self, calibrated: bool = False) -> None:
        self.calibrated = calibrated
        self.sums: torch.Tensor | None = None  # [loss sum, correct count] or [loss sum, *bins]
        self.count = 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor) -> None:
        if self.calibrated:
            confidence, predicted = logits.float().softmax(1).max(1)
            bins = calibration_bins(confidence, predicted == targets)
            sums = torch.cat((loss_sum.view(1), bins.flatten()))
        else:
            correct = (logits.argmax(1) == targets).sum()
            sums = torch.stack((loss_sum, correct.to(loss_sum.dtype)))
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += len(targets)

    def read(self) -> Scores:
        """The scores of what was added since the last read."""
        sums, count = self.sums.cpu(), self.count
        self.sums, self.count = None, 0
        if not self.calibrated:
            loss_sum, correct = sums.tolist()
            return Scores(loss_sum / count, correct / count)
        bins = sums[1:].view(3, -1)
        return Scores(sums[0].item() / count, bins[2].sum().item() / count, bins)


class DropoutClassifier(L.LightningModule):
    """Wraps any classifier nn.Module; `constraint` (max-norm) runs after every optimizer step,
    by default the model's own `apply_max_norm()` where it has one.

    It steps its optimizer itself, once per mini-batch of a `Steps` batch (data/module.py): one
    Lightning batch is many steps, which takes Lightning's per-batch cost off every step. Every
    step, its order and its random draws are those of one step per Lightning batch."""

    def __init__(
        self,
        model: nn.Module,
        optim: Optim = Optim(),
        constraint: Callable[[], None] | None = None,
        gradient_clip: GradientClip | None = None,
        mc_samples: int = 0,
        dropout_holders: Sequence[nn.Module] | None = None,
    ) -> None:
        """`mc_samples` T > 0: validation and test are also scored by MC dropout (T passes with
        dropout on, averaged: val/acc_mc, val/nll_mc, val/ece_mc, test/..._mc), turned on in
        `dropout_holders` (default: the model's dropout modules)."""
        super().__init__()
        self.automatic_optimization = False
        self.model, self.optim, self.gradient_clip = model, optim, gradient_clip
        self.mc_samples, self.dropout_holders = mc_samples, dropout_holders
        self.constraint = constraint or getattr(model, "apply_max_norm", None)
        self.tallies = {
            "train": EpochTally(),
            "val": EpochTally(calibrated=True),
            "train_probe": EpochTally(),
            "test": EpochTally(calibrated=True),
            "val_mc": EpochTally(calibrated=True),
            "test_mc": EpochTally(calibrated=True),
        }
        self.history: list[dict[str, float]] = []
        # concrete dropout's sites by path, and their regulariser's weight 2 / N (on_train_start)
        self.concrete_sites = {
            path: site
            for path, site in dropout_modules(model).items()
            if isinstance(site, ConcreteDropout)
        }
        self.concrete_weight = 0.0
        self.val_bins: torch.Tensor | None = None  # the latest epoch's calibration bins
        self.best_val_acc = float("-inf")
        self.resumed_from_epoch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], part: str) -> None:
        x, y = batch
        logits = self.model(x)
        self.tallies[part].add(logits, y, F.cross_entropy(logits, y, reduction="sum"))
        if self.mc_samples and part in ("val", "test"):
            # its own random stream: the training masks stay those of a fit without MC passes
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                log_p = mc_log_probabilities(self.model, x, self.mc_samples, self.dropout_holders)
            self.tallies[f"{part}_mc"].add(log_p, y, F.nll_loss(log_p, y, reduction="sum"))

    def training_step(self, batch: Steps | tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """Each mini-batch: forward, backward, clip, step, then max-norm's projection right after
        the step. A DataLoader's batch (a streamed or user's DataModule) is one step. The running
        loss and accuracy are tallied once per run of steps; after the epoch's last, the
        schedule steps and the epoch is evaluated."""
        optimizer = self.optimizers()
        # at full precision Lightning's backward and step only call hooks droptune leaves empty:
        # the tensors' own calls skip ~0.3 ms of hooks per step (a 2-core CPU); mixed precision
        # keeps Lightning's, which scale the loss and cast
        direct = type(self.trainer.precision_plugin) is Precision
        losses, outputs, targets = [], [], []
        for x, y in batch if isinstance(batch, Steps) else [batch]:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            losses.append(loss.detach())
            outputs.append(logits.detach())
            targets.append(y)
            if self.concrete_sites:
                sites = self.concrete_sites.values()
                loss = loss + self.concrete_weight * sum(s.regularization() for s in sites)
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
        # the steps' mean losses weighted by their sizes: one product for the run of steps
        sizes = torch.tensor([len(y) for y in targets], dtype=torch.float32, device=self.device)
        loss_sum = torch.stack(losses).float() @ sizes
        self.tallies["train"].add(torch.cat(outputs), torch.cat(targets), loss_sum)
        trainer = self.trainer
        if trainer.is_last_batch or batch_idx + 1 >= trainer.num_training_batches:
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()  # where Lightning steps an epoch schedule: before validation
            self._validate()
            self.history.append(self._epoch_metrics())

    @torch.no_grad()
    def _validate(self) -> None:
        """The datamodule's validation loader, then its training probe where it has one (dropout
        off on a sample of the training part), evaluated here at the epoch's end. Lightning's
        evaluation loop, which the trainer skips for this module (fit.trainer_arguments), cost
        ~7 ms an epoch on a 2-core CPU: a third of a small network's epoch of 12 steps."""
        self.model.eval()
        with self.trainer.precision_plugin.val_step_context():
            for part, loader in zip(("val", "train_probe"), self._val_loaders, strict=False):
                for x, y in loader:
                    self._evaluate((x.to(self.device), y.to(self.device)), part)
        self.model.train()

    def on_fit_start(self) -> None:
        """The datamodule's validation loaders, made once a fit (the datamodule is set up)."""
        datamodule = self.trainer.datamodule  # None: a fit on a bare training loader
        loaders = datamodule.val_dataloader() if datamodule is not None else []
        self._val_loaders = loaders if isinstance(loaders, list | tuple) else [loaders]

    def on_train_start(self) -> None:
        """Concrete dropout's regulariser weight, 2 / N for N training examples (Gal et al.)."""
        if self.concrete_sites:
            loader = self.trainer.train_dataloader
            n = len(loader.y) if isinstance(loader, IndexBatches) else len(loader.dataset)
            self.concrete_weight = 2.0 / n

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

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

    def _epoch_metrics(self) -> dict[str, float]:
        """The epoch's metric contract, read from its tallies (the validation part's and the
        training probe's where the datamodule gives them)."""
        train = self.tallies["train"].read()
        metrics = {"train/loss": train.loss, "train/acc": train.acc}
        metrics |= {f"rate/{path}": site.p for path, site in self.concrete_sites.items()}
        if not self.tallies["val"].count:
            return metrics
        val, val_metrics = self._scores("val")
        self.val_bins = val.bins
        self.best_val_acc = max(self.best_val_acc, val.acc)
        metrics |= val_metrics | {"val/acc_best": self.best_val_acc}
        if self.tallies["train_probe"].count:
            probe = self.tallies["train_probe"].read()
            metrics |= {
                "train/acc_eval": probe.acc,
                "gap/acc": probe.acc - val.acc,
                "train/nll_eval": probe.loss,
                "gap/nll": val.loss - probe.loss,
            }
        return metrics

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._scores("test")[1])

    def _scores(self, part: str) -> tuple[Scores, dict[str, float]]:
        """The scores of the validation or test part, and its metrics: loss (= nll), accuracy,
        calibration, and with MC dropout the same of the averaged passes."""
        scores = self.tallies[part].read()
        metrics = {
            f"{part}/loss": scores.loss,
            f"{part}/acc": scores.acc,
            f"{part}/nll": scores.loss,
            f"{part}/ece": scores.ece,
        }
        if self.mc_samples:
            mc = self.tallies[f"{part}_mc"].read()
            metrics |= {
                f"{part}/acc_mc": mc.acc,
                f"{part}/nll_mc": mc.loss,
                f"{part}/ece_mc": mc.ece,
            }
        return scores, metrics

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
