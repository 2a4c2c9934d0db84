"""The fused runner: K trials trained in one fit, their parameters stacked along a member axis.

Small dropout-study MLPs leave a GPU nearly idle one at a time; stacked, one step updates every
member with batched matmuls. A group shares what one fit must: model family (MLP), depth, a width
band, activation, optimizer and schedule, batch size and epochs. Everything else a trial samples is
per member: widths, dropout placement, variant and rates at every site, lr, momentum, weight decay,
max-norm c, initialisation, data order and dropout masks. Pruned or failed members leave the group
at the end of an epoch, and the stacked tensors shrink with them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from optuna.trial import TrialState

from droptune import data as ds
from droptune.config import mlp_widths, validate
from droptune.models.stacked import (
    FUSED_VARIANTS,
    STORAGE_DTYPES,
    StackedMLP,
    member_keys,
    stacked_cross_entropy,
    uniform,
)
from droptune.models.stacked_optim import StackedOptimizer
from droptune.runner import (
    SequentialRunner,
    TrialOutcome,
    TrialReporter,
    TrialSpec,
    describe_trial,
    diverged,
)

log = logging.getLogger("droptune")

GROUP_KEYS = (
    ("model", "activation"),
    ("optim", "name"),
    ("optim", "nesterov"),
    ("optim", "schedule"),
    ("data", "batch_size"),
    ("data", "standardize"),
    ("trainer", "max_epochs"),
)


def _get(config: Mapping[str, Any], path: Sequence[str]) -> Any:
    for key in path:
        config = config.get(key) if isinstance(config, Mapping) else None
    return config


def fusable(config: Mapping[str, Any], n_folds: int) -> bool:
    """MLP trials on one split with a variant the stacked model implements (others run alone)."""
    return (
        config["model"]["family"] == "mlp"
        and n_folds == 1
        and config["model"]["dropout"].get("variant", "inverted") in FUSED_VARIANTS
        and config["optim"].get("momentum_ramp") is None
    )


def group_key(config: Mapping[str, Any]) -> tuple:
    """Members of one fit: same depth and shared settings, and widest layers within a factor of two
    (a power-of-two band), so padding to the group's widest at most doubles a member's work."""
    widths = mlp_widths(config["model"])
    band = math.ceil(math.log2(max(widths)))
    return (len(widths), band, *(_get(config, path) for path in GROUP_KEYS))


def member_seed(seed: int, trial_number: int) -> int:
    """Each member its own streams, the same whichever group it trains in."""
    return seed * 1_000_003 + trial_number


@dataclass
class Member:
    """One trial inside a group: its config and what the study loop needs back."""

    index: int  # position in the runner's input list
    config: dict[str, Any]
    seed: int


class StepIndices:
    """The dataloader of a fused fit: step numbers; the module gathers each member's batch."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps = n_steps

    def __len__(self) -> int:
        return self.n_steps

    def __iter__(self):
        return iter(range(self.n_steps))


EpochReport = Callable[[int, list[dict[str, float]]], list[bool]]


def forward_losses(
    net: StackedMLP, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member mean loss (K,) and correct count (K,) of a stacked batch: the part of a step
    that torch.compile fuses (masks generated in the kernels that use them)."""
    logits = net(x.to(net.weights[0].dtype))
    return stacked_cross_entropy(logits, y), (logits.argmax(-1) == y).sum(1)


class FusedClassifier(L.LightningModule):
    """A group of trials as one LightningModule (manual optimization over stacked parameters)."""

    def __init__(
        self,
        net: StackedMLP,
        members: list[Member],
        tensors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        batch_size: int,
        report: EpochReport,
        compile: bool = False,
        phase_seconds: dict[str, float] | None = None,
    ) -> None:
        """`phase_seconds`, if given, accumulates the seconds of each phase of a step (forward,
        backward, optimizer) and of evaluation, the device synchronised around each: a profile."""
        super().__init__()
        self.phase_seconds = phase_seconds
        self.automatic_optimization = False
        self.net, self.members, self.tensors = net, list(members), tensors
        self.batch_size, self.report, self.compile = batch_size, report, compile
        self.best = torch.full((len(members),), -math.inf)
        self.optimizer: StackedOptimizer | None = None
        self.forward_losses = (
            torch.compile(forward_losses, dynamic=True) if compile else forward_losses
        )
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
        self.optimizer = StackedOptimizer(
            self.net,
            self.members[0].config["optim"]["name"],
            [m.config["optim"] for m in self.members],
            self.compile,
        )

    def train_dataloader(self) -> StepIndices:
        n = len(self.tensors["train"][1])
        return StepIndices(-(-n // self.batch_size))

    def on_train_epoch_start(self) -> None:
        x, _ = self.tensors["train"]
        keys = member_keys(self.net.seeds, 1_000_000 + self.current_epoch)
        self.order = torch.argsort(uniform(keys, len(x)), dim=1)  # each member's own shuffle
        self._sums = torch.zeros(2, len(self.members), device=x.device)  # loss sum, correct count
        self._seen = 0
        self._epoch_start = time.perf_counter()
        schedule = self.members[0].config["optim"].get("schedule", "none")
        epochs = self.trainer.max_epochs
        if schedule == "cosine":
            self.optimizer.lr_scale.fill_(
                0.5 * (1 + math.cos(math.pi * self.current_epoch / epochs))
            )
        elif schedule == "exponential":
            gamma = self.members[0].config["optim"].get("gamma", 0.95)
            self.optimizer.lr_scale.fill_(gamma**self.current_epoch)

    def training_step(self, step: int, batch_idx: int) -> None:
        x, y = self.tensors["train"]
        index = self.order[:, step * self.batch_size : (step + 1) * self.batch_size]
        with self._phase("forward"):
            losses, correct = self.forward_losses(self.net, x[index], y[index])
        for p in self.net.parameters():
            p.grad = None
        with self._phase("backward"):
            losses.sum().backward()  # members are independent: each gets its own gradient
        with self._phase("optimizer"):
            self.optimizer.step()  # and each member's max-norm, in the same pass
        self.net.step += 1
        with torch.no_grad():
            self._sums[0] += losses.detach() * index.shape[1]
            self._sums[1] += correct
        self._seen += index.shape[1]

    @torch.no_grad()
    def _evaluate(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member (loss, accuracy) on a resident split, dropout off, in memory-bounded chunks."""
        self.net.eval()
        x, y = self.tensors[part]
        k = len(self.members)
        chunk = max(256, 2**22 // max(1, k * max(w.shape[1] for w in self.net.weights)))
        loss = torch.zeros(k, device=x.device)
        correct = torch.zeros(k, device=x.device)
        for start in range(0, len(y), chunk):
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            chunk_loss, chunk_correct = self.forward_losses(
                self.net, xb.expand(k, *xb.shape), yb.expand(k, -1)
            )
            loss += chunk_loss * len(yb)
            correct += chunk_correct
        self.net.train()
        return loss / len(y), correct / len(y)

    def on_train_epoch_end(self) -> None:
        with self._phase("evaluate"):
            val_loss, val_acc = self._evaluate("val")
            _, probe_acc = self._evaluate("train_probe")
        train = (self._sums / self._seen).cpu()  # one host sync per epoch
        val_loss, val_acc, probe_acc = val_loss.cpu(), val_acc.cpu(), probe_acc.cpu()
        self.best = torch.maximum(self.best, val_acc)
        seconds = (time.perf_counter() - self._epoch_start) / len(self.members)
        metrics = [
            {
                "train/loss": float(train[0, i]),
                "train/acc": float(train[1, i]),
                "train/acc_eval": float(probe_acc[i]),
                "val/loss": float(val_loss[i]),
                "val/acc": float(val_acc[i]),
                "val/acc_best": float(self.best[i]),
                "gap/acc": float(probe_acc[i] - val_acc[i]),
                "time/trial_epoch_s": seconds,
            }
            for i in range(len(self.members))
        ]
        keep = self.report(self.current_epoch, metrics)
        if all(keep):
            return
        survivors = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long)
        self.members = [m for m, k in zip(self.members, keep, strict=True) if k]
        self.best = self.best[survivors]
        if not self.members:
            self.trainer.should_stop = True
            return
        on_device = survivors.to(self.net.seeds.device)
        self.net.keep(on_device)
        self.optimizer.keep(on_device)


@dataclass
class MemberState:
    """What the runner tracks for a member while its group trains."""

    run_id: str
    history: list[dict[str, float]]
    outcome: TrialOutcome | None = None


def train_group(
    arrays: ds.Arrays,
    train_index: np.ndarray,
    val_index: np.ndarray,
    members: list[Member],
    report: EpochReport,
    data_cache: dict | None = None,
    compile: bool | str = "auto",
    precision: str = "fp32",
    phase_seconds: dict[str, float] | None = None,
) -> FusedClassifier:
    """One fit of a group: data resident on the device once, a StackedMLP of the members.

    `compile` (True, False, or "auto": on a GPU) fuses each step's element-wise work into a few
    kernels; `precision` ("fp32" or "bf16") is the storage type of weights and optimizer state."""
    base = members[0].config
    datamodule = ds.TensorDataModule(
        arrays, train_index, val_index, base["data"]["batch_size"],
        standardize=base["data"].get("standardize", True), seed=base["seed"], cache=data_cache,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator=base["trainer"].get("accelerator", "auto"),
        devices=1,
        max_epochs=base["trainer"]["max_epochs"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    datamodule.trainer = trainer
    datamodule.setup()
    flat = {k: (x.flatten(1), y) for k, (x, y) in datamodule.tensors.items()}
    widths = [mlp_widths(m.config["model"]) for m in members]
    net = StackedMLP(
        flat["train"][0].shape[1],
        len(arrays.classes),
        widths,
        [m.seed for m in members],
        [m.config["model"]["dropout"].get("input", 0.0) for m in members],
        [_rates(m.config, len(widths[0])) for m in members],
        [m.config["model"]["dropout"].get("output", 0.0) for m in members],
        [m.config["model"].get("max_norm") for m in members],
        base["model"]["activation"],
        [m.config["model"]["dropout"].get("placement", "after") for m in members],
        [m.config["model"]["dropout"].get("variant", "inverted") for m in members],
        STORAGE_DTYPES[precision],
    ).to(trainer.strategy.root_device)
    if compile == "auto":
        compile = trainer.strategy.root_device.type == "cuda"
    module = FusedClassifier(
        net, members, flat, base["data"]["batch_size"], report, compile, phase_seconds
    )
    trainer.fit(module)
    return module


class FusedRunner:
    """Trains up to `capacity` trials at once, in groups of what can share one fit.

    Trials that cannot be fused (a CNN, a CV objective, the alpha variant, an invalid config) go
    to the standard runner it wraps, which also supplies the data, metric and tracking.
    """

    def __init__(
        self,
        capacity: int,
        standard: SequentialRunner,
        compile: bool | str = "auto",
        precision: str = "fp32",
    ) -> None:
        self.capacity, self.standard = capacity, standard
        self.compile, self.precision = compile, precision

    def run(self, specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
        outcomes: list[TrialOutcome | None] = [None] * len(specs)
        groups: dict[tuple, list[int]] = {}
        for i, spec in enumerate(specs):
            if _valid(spec.config) and fusable(spec.config, len(self.standard.folds)):
                groups.setdefault(group_key(spec.config), []).append(i)
            else:
                (outcomes[i],) = self.standard.run([spec])
        for indices in groups.values():
            group = [specs[i] for i in indices]
            for i, outcome in zip(indices, self._run_group(group), strict=True):
                outcomes[i] = outcome
        return outcomes

    def _run_group(self, specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
        standard, metric = self.standard, self.standard.metric
        base = specs[0].config
        members = [
            Member(i, s.config, member_seed(base["seed"], s.trial.number))
            for i, s in enumerate(specs)
        ]
        states = []
        for spec in specs:
            spec.trial.set_user_attr("fused_group_size", len(specs))
            states.append(MemberState(standard.open_run(spec), []))
        reporters = [TrialReporter(spec.trial, metric) for spec in specs]
        alive = list(range(len(specs)))  # the members still training, in the group's order

        def finish(i: int, outcome: TrialOutcome) -> None:
            states[i].outcome = outcome
            standard.tracking.finish_trial(
                states[i].run_id, outcome.state.name, outcome.reason, {}, 0
            )

        def report(epoch: int, metrics: list[dict[str, float]]) -> list[bool]:
            keep = []
            for i, m in zip(alive, metrics, strict=True):
                states[i].history.append(m)
                standard.tracking.tracker.log_metrics(states[i].run_id, m, epoch)
                failure = diverged(m, epoch)
                if failure:
                    finish(i, TrialOutcome(TrialState.FAIL, reason=failure, metrics=m))
                elif reporters[i].report(m[metric], epoch):
                    finish(i, TrialOutcome(TrialState.PRUNED, metrics=m))
                keep.append(states[i].outcome is None)
            alive[:] = [i for i, k in zip(alive, keep, strict=True) if k]
            return keep

        ((train_index, val_index),) = standard.folds
        try:
            train_group(
                standard.arrays, train_index, val_index, members, report, standard.data_cache,
                self.compile, self.precision,
            )  # fmt: skip
        except Exception as error:  # OOM or any other error fails this group's open trials only
            if isinstance(error, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            log.warning("fused group of %d failed", len(specs), exc_info=True)
            for i in alive:
                finish(i, TrialOutcome(TrialState.FAIL, reason=f"{type(error).__name__}: {error}"))
        for i in alive:
            if states[i].outcome is None:  # the survivors: complete
                m = states[i].history[-1]
                finish(i, TrialOutcome(TrialState.COMPLETE, m[metric], metrics=m))
        for spec, state in zip(specs, states, strict=True):
            describe_trial(spec.trial, spec.config, state.outcome)
        return [state.outcome for state in states]


def _valid(config: Mapping[str, Any]) -> bool:
    try:
        validate(config)
    except ValueError:
        return False
    return True


def _rates(config: Mapping[str, Any], depth: int) -> list[float]:
    hidden = config["model"]["dropout"].get("hidden", 0.0)
    return [float(r) for r in hidden] if isinstance(hidden, list) else [float(hidden)] * depth
