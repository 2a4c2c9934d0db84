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
from collections.abc import Callable, Mapping, Sequence
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
    StackedMLP,
    member_keys,
    stacked_cross_entropy,
    uniform,
)
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


class StackedOptimizer:
    """SGD (momentum, nesterov) or Adam/AdamW with one lr, momentum and weight decay per member.

    Written out because torch.optim takes one lr per parameter tensor, and here a tensor holds K
    members. Updates are per member, so a member's trajectory does not depend on its group.
    """

    def __init__(
        self, params: Sequence[torch.nn.Parameter], name: str, members: Sequence[Member]
    ) -> None:
        def column(key: str, default: float) -> torch.Tensor:
            values = [float(m.config["optim"].get(key, default)) for m in members]
            return torch.tensor(values, device=params[0].device).view(-1, 1, 1)

        self.name = name
        self.nesterov = bool(members[0].config["optim"].get("nesterov", False))
        self.lr = column("lr", 0.01)
        self.weight_decay = column("weight_decay", 0.0)
        if name == "sgd":
            self.momentum = column("momentum", 0.0)
        else:
            betas = [m.config["optim"].get("betas", (0.9, 0.999)) for m in members]
            self.beta1 = torch.tensor([b[0] for b in betas], device=params[0].device).view(-1, 1, 1)
            self.beta2 = torch.tensor([b[1] for b in betas], device=params[0].device).view(-1, 1, 1)
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]
        self.steps = 0
        self.lr_scale = 1.0  # the shared schedule's factor

    @torch.no_grad()
    def step(self, params: Sequence[torch.nn.Parameter]) -> None:
        self.steps += 1
        lr = self.lr * self.lr_scale
        for p, state in zip(params, self.state, strict=True):
            g = p.grad
            if self.name == "sgd":
                if self.weight_decay.any():
                    g = g + self.weight_decay * p
                if "buf" not in state:
                    state["buf"] = g.clone()
                else:
                    state["buf"].mul_(self.momentum).add_(g)
                update = g + self.momentum * state["buf"] if self.nesterov else state["buf"]
                p.sub_(lr * update)
                continue
            if self.name == "adamw":
                p.mul_(1.0 - lr * self.weight_decay)
            elif self.weight_decay.any():
                g = g + self.weight_decay * p
            if "m" not in state:
                state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
            state["m"].lerp_(g, 1.0 - self.beta1)
            state["v"].lerp_(g * g, 1.0 - self.beta2)
            m_hat = state["m"] / (1.0 - self.beta1**self.steps)
            v_hat = state["v"] / (1.0 - self.beta2**self.steps)
            p.sub_(lr * m_hat / (v_hat.sqrt() + 1e-8))

    def keep(self, members: torch.Tensor) -> None:
        for name in ("lr", "weight_decay", "momentum", "beta1", "beta2"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name)[members])
        self.state = [{k: v[members] for k, v in state.items()} for state in self.state]


class StepIndices:
    """The dataloader of a fused fit: step numbers; the module gathers each member's batch."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps = n_steps

    def __len__(self) -> int:
        return self.n_steps

    def __iter__(self):
        return iter(range(self.n_steps))


EpochReport = Callable[[int, list[dict[str, float]]], list[bool]]


class FusedClassifier(L.LightningModule):
    """A group of trials as one LightningModule (manual optimization over stacked parameters)."""

    def __init__(
        self,
        net: StackedMLP,
        members: list[Member],
        tensors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        batch_size: int,
        report: EpochReport,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.members, self.tensors = net, list(members), tensors
        self.batch_size, self.report = batch_size, report
        self.best = torch.full((len(members),), -math.inf)
        self.optimizer: StackedOptimizer | None = None
        self._epoch_start = 0.0

    def configure_optimizers(self) -> None:
        params = list(self.net.parameters())
        self.optimizer = StackedOptimizer(
            params, self.members[0].config["optim"]["name"], self.members
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
            self.optimizer.lr_scale = 0.5 * (1 + math.cos(math.pi * self.current_epoch / epochs))
        elif schedule == "exponential":
            self.optimizer.lr_scale = (
                self.members[0].config["optim"].get("gamma", 0.95) ** self.current_epoch
            )

    def training_step(self, step: int, batch_idx: int) -> None:
        x, y = self.tensors["train"]
        index = self.order[:, step * self.batch_size : (step + 1) * self.batch_size]
        logits = self.net(x[index])
        targets = y[index]
        losses = stacked_cross_entropy(logits, targets)
        params = list(self.net.parameters())
        for p in params:
            p.grad = None
        losses.sum().backward()  # members are independent: each gets its own gradient
        self.optimizer.step(params)
        self.net.apply_max_norm()
        self.net.step += 1
        with torch.no_grad():
            self._sums[0] += losses.detach() * index.shape[1]
            self._sums[1] += (logits.argmax(-1) == targets).sum(1)
        self._seen += index.shape[1]

    @torch.no_grad()
    def _evaluate(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member (loss, accuracy) on a resident split, dropout off, in memory-bounded chunks."""
        self.net.eval()
        x, y = self.tensors[part]
        chunk = max(
            256, 2**22 // max(1, len(self.members) * max(w.shape[2] for w in self.net.weights))
        )
        loss = torch.zeros(len(self.members), device=x.device)
        correct = torch.zeros(len(self.members), device=x.device)
        for start in range(0, len(y), chunk):
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            logits = self.net(xb.expand(len(self.members), *xb.shape))
            targets = yb.expand(len(self.members), -1)
            loss += stacked_cross_entropy(logits, targets) * len(yb)
            correct += (logits.argmax(-1) == targets).sum(1)
        self.net.train()
        return loss / len(y), correct / len(y)

    def on_train_epoch_end(self) -> None:
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
) -> FusedClassifier:
    """One fit of a group: data resident on the device once, a StackedMLP of the members."""
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
    ).to(trainer.strategy.root_device)
    module = FusedClassifier(net, members, flat, base["data"]["batch_size"], report)
    trainer.fit(module)
    return module


class FusedRunner:
    """Trains up to `capacity` trials at once, in groups of what can share one fit.

    Trials that cannot be fused (a CNN, a CV objective, the alpha variant, an invalid config) go
    to the standard runner it wraps, which also supplies the data, metric and tracking.
    """

    def __init__(self, capacity: int, standard: SequentialRunner) -> None:
        self.capacity, self.standard = capacity, standard

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
                standard.arrays, train_index, val_index, members, report, standard.data_cache
            )
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
