"""The fused runner: K trials trained in one fit, their parameters stacked along a member axis.

Small dropout-study MLPs leave a GPU nearly idle one at a time; stacked, one step updates every
member with batched matmuls. A group shares what one fit must: model family (MLP), depth, a width
band, activation, optimizer and schedule, batch size and epochs. Everything else a trial samples is
per member: widths, dropout placement, variant and rates at every site, lr, momentum, weight decay,
max-norm c, initialisation, data order and dropout masks. Pruned or failed members leave the group
at the end of an epoch, and the stacked tensors shrink with them.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
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
    compiled,
    member_keys,
    stacked_cross_entropy,
    uniform,
)
from droptune.models.stacked_optim import StackedOptimizer
from droptune.runner import (
    PruningView,
    SequentialRunner,
    TrialOutcome,
    TrialSpec,
    diverged,
    raise_if_signalled,
    tell,
)

log = logging.getLogger("droptune")
# A group's StackedOptimizer steps itself (manual optimization): there is no torch optimizer to
# hand Lightning, and its "this fit will run with no optimizer" would tell the user otherwise.
warnings.filterwarnings("ignore", message="`LightningModule.configure_optimizers` returned `None`")

# members' curves reach MLflow at least this often and when their trial ends: one write per run
# for several epochs (a write of one epoch cost 4.4 ms, of 15 epochs 0.75 ms per epoch, SQLite)
METRICS_EVERY_S = 10.0

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
    """None for a key the config's variant does not have (Adam has no nesterov)."""
    for key in path:
        config = config.get(key) if isinstance(config, Mapping) else None
    return config


def fusable(config: Mapping[str, Any], n_folds: int) -> bool:
    """MLP trials on one split with a variant the stacked model implements (others run alone);
    rates set by site glob are the standard runner's (the stacked model has no module paths)."""
    return (
        config["model"]["family"] == "mlp"
        and n_folds == 1
        and not config["model"]["dropout"]["sites"]
        and config["model"]["dropout"]["variant"] in FUSED_VARIANTS
        and config["optim"]["momentum_ramp"] is None
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
    """One trial inside a group: its config, where its state is saved, and what it resumes from."""

    index: int  # position in the runner's input list
    config: dict[str, Any]
    seed: int
    checkpoint: Path | None = None
    resume: dict[str, Any] | None = None  # a saved member state (load_member_checkpoint)

    @property
    def start_epoch(self) -> int:
        return self.resume["epoch"] if self.resume else 0


def load_member_checkpoint(path: Path | None) -> dict[str, Any] | None:
    """A fused member's saved state (unpadded tensors, epochs done, curves), or None."""
    return torch.load(path, map_location="cpu") if path is not None and path.exists() else None


# Lightning's per-batch machinery costs host time comparable to a whole small step (~0.4 ms on a
# 2-core CPU), so one Lightning batch of a fused fit is this many training steps
STEPS_PER_BATCH = 16


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
        self.net, self.members, self.tensors = net, list(members), tensors
        self.batch_size, self.report, self.compile = batch_size, report, compile
        (self.epoch_offset,) = {m.start_epoch for m in members}
        self.histories = [list(m.resume["history"]) if m.resume else [] for m in members]
        self.best = torch.tensor(
            [max((h["val/acc"] for h in hist), default=-math.inf) for hist in self.histories]
        )
        self.checkpoint_interval = checkpoint_interval
        self._saved_at = time.monotonic()
        self.optimizer: StackedOptimizer | None = None
        self.forward_losses = compiled(forward_losses) if compile else forward_losses
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
            [m.config["optim"] for m in self._rows],
            self.compile,
        )
        resumed = [(i, m.resume) for i, m in enumerate(self._rows) if m.resume]  # copies too
        if not resumed:
            return
        with torch.no_grad():
            for i, saved in resumed:
                for index, p, slot, values, state in zip(
                    self._slices(i), self.net.parameters(), self.optimizer.state,
                    saved["params"], saved["state"], strict=True,
                ):  # fmt: skip
                    p[index] = values.to(p)
                    for target, value in zip(slot, state, strict=True):
                        target[index] = value.to(target)
            steps = resumed[0][1]["steps"]  # the same for every member: same epochs, same data
            self.net.step.fill_(steps)
            self.optimizer.t.fill_(steps)

    @property
    def _rows(self) -> list[Member]:
        """The members as the stacked tensors hold them (train_group: a compiled group of one
        holds its member twice)."""
        return self.members + self.members[:1] * (len(self.net.seeds) - len(self.members))

    def _slices(self, i: int) -> list[tuple]:
        """Row i's own (unpadded) part of each stacked parameter, as parameters() lists them."""
        sizes = [
            self.net.weights[0].shape[2],
            *mlp_widths(self._rows[i].config["model"]),
            self.net.weights[-1].shape[1],
        ]
        weights = [
            (i, slice(0, fan_out), slice(0, fan_in))
            for fan_in, fan_out in itertools.pairwise(sizes)
        ]
        biases = [(i, slice(None), slice(0, fan_out)) for fan_out in sizes[1:]]
        return weights + biases

    def _save_members(self) -> None:
        """Each surviving member's own state, atomically: a retried trial resumes from it."""
        for i, member in enumerate(self.members):
            if member.checkpoint is None:
                continue
            slices = self._slices(i)
            state = {
                "epoch": len(self.histories[i]),
                "steps": int(self.net.step),
                "history": self.histories[i],
                "params": [
                    p.detach()[index].cpu()
                    for index, p in zip(slices, self.net.parameters(), strict=True)
                ],
                "state": [
                    [v[index].cpu() for v in slot]
                    for index, slot in zip(slices, self.optimizer.state, strict=True)
                ],
            }
            member.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            staged = member.checkpoint.with_name(member.checkpoint.name + ".tmp")
            torch.save(state, staged)
            os.replace(staged, member.checkpoint)
        self._saved_at = time.monotonic()

    def train_dataloader(self) -> StepChunks:
        n = len(self.tensors["train"][1])
        return StepChunks(-(-n // self.batch_size))

    def on_train_epoch_start(self) -> None:
        raise_if_signalled()
        x, _ = self.tensors["train"]
        epoch = self.epoch_offset + self.current_epoch
        keys = member_keys(self.net.seeds, 1_000_000 + epoch)
        self.order = torch.argsort(uniform(keys, len(x)), dim=1)  # each member's own shuffle
        self._sums = torch.zeros(2, len(self._rows), device=x.device)  # loss sum, correct count
        self._seen = 0
        self._epoch_start = time.perf_counter()
        schedule = self.members[0].config["optim"]["schedule"]
        epochs = self.epoch_offset + self.trainer.max_epochs
        if schedule == "cosine":
            self.optimizer.set_lr_scale(0.5 * (1 + math.cos(math.pi * epoch / epochs)))
        elif schedule == "exponential":
            gamma = self.members[0].config["optim"]["gamma"]
            self.optimizer.set_lr_scale(gamma**epoch)

    def training_step(self, steps: tuple[int, int], batch_idx: int) -> None:
        for step in range(*steps):
            self._train_step(step)

    def _train_step(self, step: int) -> None:
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
        k = len(self._rows)
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
        n = len(self.members)  # the rows after them copy a member
        train = (self._sums[:, :n] / self._seen).cpu()  # one host sync per epoch
        val_loss, val_acc, probe_acc = (t[:n].cpu() for t in (val_loss, val_acc, probe_acc))
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
            for i in range(n)
        ]
        last = self.current_epoch + 1 == self.trainer.max_epochs
        if last and self.members[0].config["evaluate_test"] and "test" in self.tensors:
            test_loss, test_acc = (t[:n].cpu() for t in self._evaluate("test"))
            for i, m in enumerate(metrics):  # reported with the trial, never selected on
                m.update({"test/loss": float(test_loss[i]), "test/acc": float(test_acc[i])})
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
            self.net.keep(on_device, narrow_branches=not self.compile)
            self.optimizer.keep(on_device)


@dataclass
class MemberState:
    """What the runner tracks for a member while its group trains."""

    run_id: str
    last: dict[str, float] | None = None  # the latest epoch's metrics
    outcome: TrialOutcome | None = None
    unlogged: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (epoch, metrics)


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
    checkpoint_interval: float | None = None,
) -> FusedClassifier:
    """One fit of a group: data resident on the device once, a StackedMLP of the members.

    `compile` (True, False, or "auto": on a GPU) fuses each step's element-wise work into a few
    kernels; `precision` ("fp32" or "bf16") is the storage type of weights and optimizer state."""
    base = members[0].config
    datamodule = ds.TensorDataModule(
        arrays, train_index, val_index, base["data"]["batch_size"],
        standardize=base["data"]["standardize"], seed=base["seed"], cache=data_cache,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator=base["trainer"]["accelerator"],
        devices=1,
        max_epochs=base["trainer"]["max_epochs"] - members[0].start_epoch,
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
    if compile == "auto":
        compile = trainer.strategy.root_device.type == "cuda"
    # torch specialises a size of 1, so a compiled group of one member would compile every
    # function again; it holds a copy of its member as a second row instead, whose results are
    # dropped (a one-member step on a GPU is launch-bound: the copy costs next to nothing)
    rows = members * 2 if compile and len(members) == 1 else members
    widths = [mlp_widths(m.config["model"]) for m in rows]
    net = StackedMLP(
        flat["train"][0].shape[1],
        len(arrays.classes),
        widths,
        [m.seed for m in rows],
        [m.config["model"]["dropout"]["input"] for m in rows],
        [_rates(m.config, len(widths[0])) for m in rows],
        [m.config["model"]["dropout"]["output"] for m in rows],
        [m.config["model"]["max_norm"] for m in rows],
        base["model"]["activation"],
        [m.config["model"]["dropout"]["placement"] for m in rows],
        [m.config["model"]["dropout"]["variant"] for m in rows],
        STORAGE_DTYPES[precision],
    ).to(trainer.strategy.root_device)
    module = FusedClassifier(
        net, members, flat, base["data"]["batch_size"], report, compile, phase_seconds,
        checkpoint_interval,
    )  # fmt: skip
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
        checkpoint_interval: float | None = 60.0,
    ) -> None:
        self.capacity, self.standard = capacity, standard
        self.compile, self.precision = compile, precision
        self.checkpoint_interval = checkpoint_interval

    def run(self, specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
        outcomes: list[TrialOutcome | None] = [None] * len(specs)
        groups: dict[tuple, list[int]] = {}
        saved: dict[int, dict[str, Any] | None] = {}
        for i, spec in enumerate(specs):
            if _valid(spec.config) and fusable(spec.config, len(self.standard.folds)):
                saved[i] = load_member_checkpoint(_member_checkpoint(spec))
                start = saved[i]["epoch"] if saved[i] else 0  # resumed members train together
                groups.setdefault((*group_key(spec.config), start), []).append(i)
            else:
                (outcomes[i],) = self.standard.run([spec])
        for indices in groups.values():
            group = [specs[i] for i in indices]
            results = self._run_group(group, [saved[i] for i in indices])
            for i, outcome in zip(indices, results, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _run_group(
        self, specs: Sequence[TrialSpec], saved: Sequence[dict[str, Any] | None]
    ) -> list[TrialOutcome]:
        """`saved`: each member's checkpoint (a retried trial) or None; all resume at one epoch."""
        standard, metric = self.standard, self.standard.metric
        tracker = standard.tracking.tracker
        base = specs[0].config
        members = [
            Member(
                i, s.config, member_seed(base["seed"], s.trial.number), _member_checkpoint(s), state
            )
            for i, (s, state) in enumerate(zip(specs, saved, strict=True))
        ]
        states = []
        for spec, member in zip(specs, members, strict=True):
            spec.trial.set_user_attr("fused_group_size", len(specs))
            states.append(MemberState(standard.open_run(spec)))
            if member.resume:  # the retried trial's first epochs: its run's curves start at 0
                spec.trial.set_user_attr("resumed_from_epoch", member.start_epoch)
                tracker.log_history(states[-1].run_id, list(enumerate(member.resume["history"])))
        alive = list(range(len(specs)))  # the members still training, in the group's order
        logged_at = time.monotonic()

        def flush(indices: Iterable[int]) -> None:
            nonlocal logged_at
            for i in indices:
                if states[i].unlogged:
                    tracker.log_history(states[i].run_id, states[i].unlogged)
                    states[i].unlogged = []
            logged_at = time.monotonic()

        def finish(i: int, outcome: TrialOutcome) -> None:
            flush([i])
            states[i].outcome = outcome
            if members[i].checkpoint is not None:
                shutil.rmtree(members[i].checkpoint.parent, ignore_errors=True)
            standard.tracking.finish_trial(
                states[i].run_id, outcome.state.name, outcome.reason, {}, 0
            )
            tell(specs[i].trial, specs[i].config, outcome)

        def report(epoch: int, metrics: list[dict[str, float]]) -> list[bool]:
            reported = []
            for i, m in zip(alive, metrics, strict=True):
                states[i].last = m
                states[i].unlogged.append((epoch, m))
                failure = diverged(m, epoch)
                if failure:
                    finish(i, TrialOutcome(TrialState.FAIL, reason=failure, metrics=m))
                else:
                    specs[i].trial.report(m[metric], epoch)
                    reported.append(i)
            if reported:  # every member's value is in before any decision: all see the same epoch
                view = PruningView(specs[reported[0]].trial.study)
                for i in reported:
                    if view.should_prune(specs[i].trial):
                        finish(i, TrialOutcome(TrialState.PRUNED, metrics=states[i].last))
            keep = [states[i].outcome is None for i in alive]
            alive[:] = [i for i, k in zip(alive, keep, strict=True) if k]
            if time.monotonic() - logged_at >= METRICS_EVERY_S:
                flush(alive)
            return keep

        ((train_index, val_index),) = standard.folds
        try:
            train_group(
                standard.arrays, train_index, val_index, members, report, standard.data_cache,
                self.compile, self.precision, checkpoint_interval=self.checkpoint_interval,
            )  # fmt: skip
        except Exception as error:  # OOM or any other error fails this group's open trials only
            if isinstance(error, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            log.warning("fused group of %d failed", len(specs), exc_info=True)
            for i in alive:
                finish(i, TrialOutcome(TrialState.FAIL, reason=f"{type(error).__name__}: {error}"))
        finally:
            flush(alive)  # what was measured is kept, whatever ended the fit
        for i in alive:
            if states[i].outcome is None:  # the survivors: complete
                m = states[i].last
                finish(i, TrialOutcome(TrialState.COMPLETE, m[metric], metrics=m))
        return [state.outcome for state in states]


def _member_checkpoint(spec: TrialSpec) -> Path | None:
    """Beside where the standard runner would keep the trial's checkpoint (same lineage)."""
    return spec.checkpoint.with_name("fused.pt") if spec.checkpoint is not None else None


def _valid(config: Mapping[str, Any]) -> bool:
    try:
        validate(config)
    except ValueError:
        return False
    return True


def _rates(config: Mapping[str, Any], depth: int) -> list[float]:
    hidden = config["model"]["dropout"]["hidden"]
    return [float(r) for r in hidden] if isinstance(hidden, list) else [float(hidden)] * depth
