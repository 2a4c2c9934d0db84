"""Dropout schedules: every site's rate as a function of how far training has gone.

`early` (Liu et al., ICML 2023: dropout only in the first part of training, which helps models
that underfit), `late` (off, then on after the cutoff: for models that overfit) and `curriculum`
(Morerio et al., ICCV 2017: the rate rises from 0 to its target). The rate a site was built with
is its target; a schedule scales it once per epoch, at the epoch's start, from the fraction of
training done (epoch / max_epochs). torch has no dropout scheduler, so the scale is written here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import lightning as L
from torch import nn

from droptune.models.sites import Site, set_rate

KINDS = ("constant", "early", "late", "curriculum")
SHAPES = ("constant", "linear")


@dataclass(frozen=True)
class Schedule:
    """kind; cutoff: the fraction of training where early dropout ends, late dropout starts and
    the curriculum reaches its target; shape (early and late): the rate is the target until or
    from the cutoff (constant), or moves linearly between 0 and the target (linear: early decays
    to 0 at the cutoff, late rises from 0 at the cutoff to the target at the end)."""

    kind: str = "constant"
    cutoff: float = 0.25
    shape: str = "constant"

    def scale(self, progress: float) -> float:
        """The factor on every site's target rate at `progress` (0 at the first epoch's start)."""
        cutoff, linear = self.cutoff, self.shape == "linear"
        if self.kind == "early":
            if progress >= cutoff:
                return 0.0
            return 1.0 - progress / cutoff if linear else 1.0
        if self.kind == "late":
            if progress < cutoff:
                return 0.0
            return (progress - cutoff) / (1.0 - cutoff) if linear else 1.0
        if self.kind == "curriculum":
            return min(1.0, progress / cutoff)
        return 1.0

    def at(self, epoch: int, max_epochs: int) -> float:
        """The factor of an epoch of a fit of `max_epochs` epochs (per epoch, at its start)."""
        return self.scale(epoch / max_epochs)


class ScheduledDropout(L.Callback):
    """Sets each site's rate at every epoch's start: its target (the rate it was built with)
    times the schedule's scale. A resumed fit gets the rate of the epoch it resumes at."""

    def __init__(self, model: nn.Module, sites: Iterable[Site], schedule: Schedule) -> None:
        self.model, self.schedule = model, schedule
        self.targets = [(site, float(site.rate)) for site in sites]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scale = self.schedule.at(trainer.current_epoch, trainer.max_epochs)
        for site, target in self.targets:
            set_rate(self.model, site, target * scale)
