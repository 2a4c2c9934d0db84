"""One fit of a group: its data resident on the device once, a StackedMLP of its members."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L

from droptune import data as ds
from droptune.build import mlp_widths
from droptune.fused.data import StackedData
from droptune.fused.grouping import Member
from droptune.fused.module import EpochReport, FusedClassifier
from droptune.inputs import Split
from droptune.models.stacked import STORAGE_DTYPES, StackedMLP


@dataclass(frozen=True)
class GroupOptions:
    """How a group trains: `compile` (True, False, or "auto": on a GPU) fuses each step's
    element-wise work into a few kernels; `precision` ("fp32" or "bf16") is the storage type of
    weights and optimizer state; `checkpoint_interval`: seconds between members' saves (None:
    never)."""

    compile: bool | str = "auto"
    precision: str = "fp32"
    checkpoint_interval: float | None = None


def stacked_net(members: list[Member], in_dim: int, n_classes: int, precision: str) -> StackedMLP:
    """The members' MLPs stacked, each row initialised from its member's own seed."""
    base = members[0].config["model"]
    models = [m.config["model"] for m in members]
    return StackedMLP(
        in_dim,
        n_classes,
        widths=[mlp_widths(model) for model in models],
        seeds=[m.seed for m in members],
        input_rates=[model["dropout"]["input"] for model in models],
        hidden_rates=[m.hidden_rates for m in members],
        output_rates=[model["dropout"]["output"] for model in models],
        max_norms=[model["max_norm"] for model in models],
        activation=base["activation"],
        placements=[model["dropout"]["placement"] for model in models],
        variants=[model["dropout"]["variant"] for model in models],
        dtype=STORAGE_DTYPES[precision],
    )


def train_group(
    arrays: ds.Arrays,
    splits: Sequence[Split],
    members: list[Member],
    report: EpochReport,
    options: GroupOptions = GroupOptions(),
    *,
    data_cache: dict | None = None,
    phase_seconds: dict[str, float] | None = None,
) -> FusedClassifier:
    """Train the group to its last epoch (or until every member has left); `report(epoch,
    metrics)` gets each epoch's per-member metrics and returns which members stay. A member trains
    on `splits[member.split]`: one split for all, or folds (of seeds) of their own."""
    base = members[0].config
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
    data = StackedData(
        arrays,
        list(splits),
        standardize=base["data"]["standardize"],
        seeds=[
            next((m.config["seed"] for m in members if m.split == j), base["seed"])
            for j in range(len(splits))
        ],
        device=trainer.strategy.root_device,
        cache=data_cache,
    )
    steps = {data.steps(m.split, base["data"]["batch_size"]) for m in members}
    if len(steps) > 1:
        raise ValueError(f"a group's members take one number of steps an epoch, not {steps}")
    compile = options.compile
    if compile == "auto":
        compile = trainer.strategy.root_device.type == "cuda"
    # torch specialises a size of 1, so a compiled group of one member would compile every
    # function again; it holds a copy of its member as a second row instead, whose results are
    # dropped (a one-member step on a GPU is launch-bound: the copy costs next to nothing)
    rows = members * 2 if compile and len(members) == 1 else members
    net = stacked_net(rows, data.in_dim, len(arrays.classes), options.precision)
    module = FusedClassifier(
        net.to(trainer.strategy.root_device),
        members,
        data,
        batch_size=base["data"]["batch_size"],
        report=report,
        compile=compile,
        phase_seconds=phase_seconds,
        checkpoint_interval=options.checkpoint_interval,
    )
    trainer.fit(module)
    return module
