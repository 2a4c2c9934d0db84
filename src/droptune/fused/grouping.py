"""Which trials can train together, and what each one is inside its group."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from droptune.build import mlp_widths
from droptune.config import validate
from droptune.fused.checkpoint import MemberCheckpoint
from droptune.inputs import Split
from droptune.models.stacked import FUSED_VARIANTS

GROUP_KEYS = (
    ("model", "activation"),
    ("optim", "name"),
    ("optim", "nesterov"),
    ("optim", "schedule"),
    ("data", "batch_size"),
    ("data", "standardize"),
    ("trainer", "max_epochs"),
)


def _value_at(config: Mapping[str, Any], path: Sequence[str]) -> Any:
    """None for a key the config's variant does not have (Adam has no nesterov)."""
    for key in path:
        config = config.get(key) if isinstance(config, Mapping) else None
    return config


def _valid(config: Mapping[str, Any]) -> bool:
    try:
        validate(config)
    except ValueError:
        return False
    return True


def epoch_steps(config: Mapping[str, Any], splits: Sequence[Split]) -> list[int]:
    """Optimizer steps an epoch of each split takes at the config's batch size."""
    batch = config["data"]["batch_size"]
    return [-(-len(train_index) // batch) for train_index, _ in splits]


def unfused_reason(config: Mapping[str, Any], splits: Sequence[Split]) -> str | None:
    """Why a trial trains alone on the standard runner, or None: MLP trials with a variant the
    stacked model implements fuse, each fold of a k-fold trial a member. Rates set by site glob
    are the standard runner's (the stacked model has no module paths); folds that take different
    numbers of steps an epoch too (a member must not step its optimizer on an empty batch); a
    config that does not validate runs alone, where its fit fails it saying why."""
    model, dropout = config["model"], config["model"]["dropout"]
    valid = _valid(config)
    steps = sorted(set(epoch_steps(config, splits))) if valid else []
    reasons = (
        (not valid, "a config that does not validate"),
        (model["family"] != "mlp", f"model={model['family']} (the fused runner stacks MLPs)"),
        (len(steps) > 1, f"folds of {' or '.join(map(str, steps))} steps an epoch"),
        (bool(dropout["sites"]), "rates set by model.dropout.sites"),
        (
            dropout["variant"] not in FUSED_VARIANTS,
            f"variant={dropout['variant']} (the fused runner stacks {', '.join(FUSED_VARIANTS)})",
        ),
        (config["optim"]["momentum_ramp"] is not None, "optim.momentum_ramp"),
        (bool(config["evaluate"]["mc_samples"]), "evaluate.mc_samples (MC-dropout passes)"),
    )
    return next((reason for failed, reason in reasons if failed), None)


def fusable(config: Mapping[str, Any], splits: Sequence[Split]) -> bool:
    return unfused_reason(config, splits) is None


def group_key(config: Mapping[str, Any]) -> tuple:
    """Members of one fit: same depth and shared settings, and widest layers within a factor of two
    (a power-of-two band), so padding to the group's widest at most doubles a member's work."""
    widths = mlp_widths(config["model"])
    band = math.ceil(math.log2(max(widths)))
    return (len(widths), band, *(_value_at(config, path) for path in GROUP_KEYS))


def member_seed(seed: int, trial_number: int) -> int:
    """Each member its own streams, the same whichever group it trains in."""
    return seed * 1_000_003 + trial_number


def member_checkpoint_path(trial_checkpoint: Path | None, fold: int | None = None) -> Path | None:
    """Beside where the standard runner would keep the trial's checkpoint (same lineage); one
    file per fold of a k-fold trial."""
    if trial_checkpoint is None:
        return None
    return trial_checkpoint.with_name("fused.pt" if fold is None else f"fused-fold{fold}.pt")


@dataclass
class Member:
    """One trial inside a group: its config, where its state is saved, and what it resumes from."""

    index: int  # position in the runner's input list
    config: dict[str, Any]
    seed: int
    checkpoint: Path | None = None
    resume: MemberCheckpoint | None = None
    split: int = 0  # which of its group's splits it trains on (a fold, a seed's fold)

    @property
    def start_epoch(self) -> int:
        return self.resume.epoch if self.resume else 0

    @property
    def hidden_rates(self) -> list[float]:
        """One rate per hidden layer, as the stacked model takes them."""
        hidden = self.config["model"]["dropout"]["hidden"]
        depth = len(mlp_widths(self.config["model"]))
        return [float(r) for r in hidden] if isinstance(hidden, list) else [float(hidden)] * depth
