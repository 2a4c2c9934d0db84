"""A group of trials as one LightningModule: manual optimization over stacked parameters."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import torch

from droptune import signals
from droptune.build import build_optim, mlp_widths, schedule_of
from droptune.calibration import ECE_BINS, calibration_bins, expected_calibration_error
from droptune.data.module import STEPS_PER_BATCH
from droptune.fused.checkpoint import member_slices, restore, snapshot
from droptune.fused.data import StackedData
from droptune.fused.grouping import Member
from droptune.lit import lr_factors
from droptune.models.stacked import (
    StackedMLP,
    compiled,
    member_keys,
    stacked_cross_entropy,
    uniform,
)
from droptune.models.stacked_optim import StackedOptimizer

EpochReport = Callable[[int, list[dict[str, float]]], list[bool]]


class StepChunks:
    """The dataloader of a fused fit: (first, end) step numbers of a run of STEPS_PER_BATCH
    steps; the module gathers each member's batch."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps = n_steps

    def __len__(self) -> int:
        return -(-self.n_steps // STEPS_PER_BATCH)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.n_steps, STEPS_PER_BATCH):
            yield start, min(start + STEPS_PER_BATCH, self.n_steps)


def forward_losses(
    net: StackedMLP, x: torch.Tensor, y: torch.Tensor, own: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member mean loss (K,) and correct count (K,) over each member's own rows (`own`, (K, B):
    a fold's last batch may be shorter than its group's) of a stacked batch: the part of a step
    that torch.compile fuses (masks generated in the kernels that use them)."""
    logits = net(x.to(net.weights[0].dtype))
    weights = own.to(torch.float32)
    losses = (stacked_cross_entropy(logits, y) * weights).sum(1) / weights.sum(1)
    return losses, ((logits.argmax(-1) == y) & own).sum(1)


def evaluation_scores(
    net: StackedMLP, x: torch.Tensor, y: torch.Tensor, own: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-member loss sum (K,), correct count (K,) and calibration bins (K, 3, bins) over each
    member's own rows of a stacked batch, dropout as the net's mode has it."""
    logits = net(x.to(net.weights[0].dtype)).float()
    confidence, predicted = logits.softmax(-1).max(-1)
    hits = (predicted == y) & own
    losses = (stacked_cross_entropy(logits, y) * own).sum(1)
    return losses, hits.sum(1), calibration_bins(confidence, hits, own)


class FusedClassifier(L.LightningModule):
    """Trains every member one step per batch; reports each epoch's per-member metrics."""

    def __init__(
        self,
        net: StackedMLP,
        members: list[Member],
        data: StackedData,
        *,
        batch_size: int,
        report: EpochReport,
        compile: bool = False,
        phase_seconds: dict[str, float] | None = None,
        checkpoint_interval: float | None = None,
    ) -> None:
        """`phase_seconds`, if given, accumulates the seconds of each phase of a step (forward,
        backward, optimizer) and of evaluation, the device synchronised around each: a profile.
        `checkpoint_interval`: save each member's state at the first epoch end this many seconds
        after the last save (members without a checkpoint path are not saved).

        Members resuming from a checkpoint all start at the same epoch (the runner groups them
        so); the fit then runs the remaining epochs and numbers them from there."""
        super().__init__()
        self.phase_seconds = phase_seconds
        self.automatic_optimization = False
        self.net, self.members, self.data = net, list(members), data
        self.split_of = torch.tensor([m.split for m in self._rows], device=net.seeds.device)
        self.batch_size, self.report, self.compile = batch_size, report, compile
        (self.epoch_offset,) = {m.start_epoch for m in members}
        self.histories = [list(m.resume.history) if m.resume else [] for m in members]
        self.best = torch.tensor(
            [max((h["val/acc"] for h in hist), default=-math.inf) for hist in self.histories]
        )
        self.checkpoint_interval = checkpoint_interval
        self._saved_at = time.monotonic()
        self.optimizer: StackedOptimizer | None = None
        self.forward_losses = compiled(forward_losses) if compile else forward_losses
        self.evaluation_scores = compiled(evaluation_scores) if compile else evaluation_scores
        self._epoch_start = 0.0

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        if self.phase_seconds is None:
            yield
            return
        synchronize = torch.cuda.synchronize if self.net.seeds.is_cuda else lambda: None
        synchronize()
        start = time.perf_counter()
        yield
        synchronize()
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start

    def configure_optimizers(self) -> None:
        optim = self.members[0].config["optim"]
        configs = [m.config["optim"] for m in self._rows]
        self.optimizer = StackedOptimizer(self.net, optim["name"], configs, self.compile)
        # the group's shared schedule, one factor per epoch of the whole fit (resumed included)
        total = self.epoch_offset + self.trainer.max_epochs
        self._lr_factors = lr_factors(build_optim(optim), total)

    def on_fit_start(self) -> None:
        """Resumed members' saved rows (copies of a member too) into the fresh stacked tensors."""
        for i, member in enumerate(self._rows):
            if member.resume:
                restore(self.net, self.optimizer, self._slices(i), member.resume)

    @property
    def _rows(self) -> list[Member]:
        """The members as the stacked tensors hold them (train_group: a compiled group of one
        holds its member twice)."""
        return self.members + self.members[:1] * (len(self.net.seeds) - len(self.members))

    def _slices(self, i: int) -> list[tuple]:
        return member_slices(self.net, i, mlp_widths(self._rows[i].config["model"]))

    def _save_members(self) -> None:
        """Each surviving member's own state, atomically: a retried trial resumes from it."""
        for i, member in enumerate(self.members):
            if member.checkpoint is not None:
                state = snapshot(self.net, self.optimizer, self._slices(i), self.histories[i])
                state.save(member.checkpoint)
        self._saved_at = time.monotonic()

    def train_dataloader(self) -> StepChunks:
        return StepChunks(self.data.steps(self.members[0].split, self.batch_size))

    def on_train_epoch_start(self) -> None:
        signals.raise_if_received()
        train = self.data["train"]
        keys = member_keys(self.net.seeds, 1_000_000 + self.epoch_offset + self.current_epoch)
        draws = uniform(keys, train.x.shape[1])
        self.own_rows = train.rows[self.split_of][:, None]
        positions = torch.arange(draws.shape[1], device=draws.device)
        draws.masked_fill_(positions >= self.own_rows, 2.0)  # padding sorts last: never drawn
        self.order = torch.argsort(draws, dim=1)  # each member's own shuffle of its own rows
        self._sums = torch.zeros(3, len(self._rows), device=draws.device)  # loss, correct, rows
        self._epoch_start = time.perf_counter()
        self.optimizer.set_lr_scale(self._lr_factors[self.epoch_offset + self.current_epoch])
        epoch, total = (
            self.epoch_offset + self.current_epoch,
            self.epoch_offset + self.trainer.max_epochs,
        )
        scales = [schedule_of(m.config["model"]).at(epoch, total) for m in self._rows]
        self.net.rate_scales.copy_(torch.tensor(scales))

    def training_step(self, steps: tuple[int, int], batch_idx: int) -> None:
        for step in range(*steps):
            self._train_step(step)

    def _train_step(self, step: int) -> None:
        index = self.order[:, step * self.batch_size : (step + 1) * self.batch_size]
        x, y = self.data["train"].gather(self.split_of, index)
        own = index < self.own_rows
        with self._phase("forward"):
            losses, correct = self.forward_losses(self.net, x, y, own)
        for p in self.net.parameters():
            p.grad = None
        with self._phase("backward"):
            losses.sum().backward()  # members are independent: each gets its own gradient
        with self._phase("optimizer"):
            self.optimizer.step()  # and each member's max-norm, in the same pass
        self.net.step += 1
        with torch.no_grad():
            rows = own.sum(1)
            self._sums += torch.stack((losses.detach() * rows, correct, rows))

    @torch.no_grad()
    def _evaluate(self, part: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-member mean loss, accuracy and expected calibration error on a resident split,
        dropout off, in memory-bounded chunks."""
        self.net.eval()
        rows = self.data[part]
        k, device = len(self._rows), self.split_of.device
        chunk = max(256, 2**22 // max(1, k * max(w.shape[1] for w in self.net.weights)))
        loss = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device)
        bins = torch.zeros(k, 3, ECE_BINS + 1, device=device)
        for start in range(0, rows.x.shape[1], chunk):
            x, y, own = rows.window(self.split_of, start, start + chunk)
            scores = self.evaluation_scores(self.net, x, y, own)
            loss, correct, bins = loss + scores[0], correct + scores[1], bins + scores[2]
        self.net.train()
        count = rows.rows[self.split_of]
        return loss / count, correct / count, expected_calibration_error(bins)

    def _epoch_metrics(self) -> list[dict[str, float]]:
        """Each member's epoch in droptune's metric contract (one host sync for all of them)."""
        with self._phase("evaluate"):
            val_loss, val_acc, val_ece = self._evaluate("val")
            probe_loss, probe_acc, _ = self._evaluate("train_probe")
        n = len(self.members)  # the rows after them copy a member
        train = (self._sums[:2, :n] / self._sums[2, :n]).cpu()
        parts = (val_loss, val_acc, val_ece, probe_loss, probe_acc)
        val_loss, val_acc, val_ece, probe_loss, probe_acc = (t[:n].cpu() for t in parts)
        self.best = torch.maximum(self.best, val_acc)
        seconds = (time.perf_counter() - self._epoch_start) / n
        metrics = [
            {
                "train/loss": float(train[0, i]),
                "train/acc": float(train[1, i]),
                "train/acc_eval": float(probe_acc[i]),
                "val/loss": float(val_loss[i]),
                "val/acc": float(val_acc[i]),
                "val/acc_best": float(self.best[i]),
                "gap/acc": float(probe_acc[i] - val_acc[i]),
                "val/nll": float(val_loss[i]),
                "val/ece": float(val_ece[i]),
                "train/nll_eval": float(probe_loss[i]),
                "gap/nll": float(val_loss[i] - probe_loss[i]),
                "time/trial_epoch_s": seconds,
            }
            for i in range(n)
        ]
        last = self.current_epoch + 1 == self.trainer.max_epochs
        if last and self.members[0].config["evaluate_test"] and "test" in self.data:
            test_loss, test_acc, test_ece = (t[:n].cpu() for t in self._evaluate("test"))
            for i, m in enumerate(metrics):  # reported with the trial, never selected on
                loss = float(test_loss[i])
                m.update(
                    {
                        "test/loss": loss,
                        "test/acc": float(test_acc[i]),
                        "test/nll": loss,
                        "test/ece": float(test_ece[i]),
                    }
                )
        return metrics

    def on_train_epoch_end(self) -> None:
        metrics = self._epoch_metrics()
        for history, m in zip(self.histories, metrics, strict=True):
            history.append(m)
        keep = self.report(self.epoch_offset + self.current_epoch, metrics)
        if not all(keep):
            self._keep(keep)
        if not self.members:
            self.trainer.should_stop = True
        elif (
            self.checkpoint_interval is not None
            and self.current_epoch + 1 < self.trainer.max_epochs  # the last one ends the trials
            and time.monotonic() - self._saved_at >= self.checkpoint_interval
        ):
            self._save_members()

    def _keep(self, keep: Sequence[bool]) -> None:
        """Pruned or failed members leave: the stacked tensors shrink to the survivors."""
        survivors = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long)
        self.members = [m for m, k in zip(self.members, keep, strict=True) if k]
        self.histories = [h for h, k in zip(self.histories, keep, strict=True) if k]
        self.best = self.best[survivors]
        if self.members:
            if self.compile and len(survivors) == 1:
                survivors = survivors.repeat(2)  # as train_group holds a compiled group of one
            on_device = survivors.to(self.net.seeds.device)
            self.split_of = self.split_of[on_device]
            self.net.keep(on_device, narrow_branches=not self.compile)
            self.optimizer.keep(on_device)
