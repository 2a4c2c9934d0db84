"""Dropout sites of any nn.Module: found by walking the module tree, set by glob, swapped by variant.

A site is a dropout module at a module path (`encoder.drop`, `head.2`). Globs (fnmatch) over those
paths set rates, pick the layers max-norm constrains, and group sites for a search space. PyTorch
has no registry of "dropout-like" modules, so the set of classes is listed here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import DropBlock2d, DropBlock3d

from droptune.models.dropout import (
    ClassicDropout,
    ConcreteDropout,
    GaussianDropout,
    MaskDropout,
    WeightDropout,
    stored_weight,
    variant_module,
)
from droptune.models.nets import renorm_rows_

# torch's own dropout modules share `_DropoutNd` (private); listed by name so a new torch that
# moves the base class still finds every one of them
TORCH_DROPOUTS: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
DROPOUT_TYPES = (
    *TORCH_DROPOUTS,
    DropBlock2d,
    DropBlock3d,
    ClassicDropout,
    GaussianDropout,
    ConcreteDropout,
    WeightDropout,  # DropConnect, at `<layer>.parametrizations.weight.0`
)
CHANNELWISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout)
INVERTED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
CONSTRAINABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Site:
    """One dropout module: where it is, what it is, how strong."""

    path: str
    kind: str
    rate: float


def dropout_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every dropout module of `model` by its path from `model`, in module order."""
    return {path: m for path, m in model.named_modules() if isinstance(m, DROPOUT_TYPES)}


def find_sites(model: nn.Module) -> list[Site]:
    """Every dropout site of `model`: its path, class and rate."""
    return [
        Site(path, type(module).__name__, float(module.p))
        for path, module in dropout_modules(model).items()
    ]


def matching(paths: Sequence[str], glob: str) -> list[str]:
    return [path for path in paths if fnmatch.fnmatchcase(path, glob)]


def unmatched_globs(paths: Sequence[str], globs: Sequence[str]) -> list[str]:
    return [glob for glob in globs if not matching(paths, glob)]


def set_site_rates(model: nn.Module, rates: Mapping[str, float]) -> None:
    """Set each glob's rate on the sites it matches; globs apply in order, so a later one wins."""
    sites = dict(model.named_modules())
    paths = [site.path for site in find_sites(model)]
    missing = unmatched_globs(paths, list(rates))
    if missing:
        raise ValueError(f"dropout glob {missing[0]!r} matches none of the sites {paths}")
    for glob, rate in rates.items():
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate {rate!r} for {glob!r} must be in [0, 1)")
        for path in matching(paths, glob):
            sites[path].p = float(rate)


def _is_channelwise(module: nn.Module) -> bool:
    if isinstance(module, MaskDropout):
        return module.channelwise
    return isinstance(module, CHANNELWISE)


def swap_variant(model: nn.Module, variant: str) -> None:
    """Replace every site by droptune's `variant` at the same rate (channel-wise sites stay
    channel-wise; a site at rate 0 stays off under `concrete`, whose rate starts above 0)."""
    for site in find_sites(model):
        if variant == "concrete" and site.rate == 0:
            continue
        parent_path, _, name = site.path.rpartition(".")
        parent = model.get_submodule(parent_path)
        old = getattr(parent, name)
        if variant == "inverted" and isinstance(old, INVERTED):
            new = type(old)(site.rate)  # torch's own: Dropout1d / 3d keep their shape rule
        else:
            new = variant_module(site.rate, variant, _is_channelwise(old))
        setattr(parent, name, new)


def constrainable_layers(model: nn.Module) -> list[str]:
    """Paths of the Linear and Conv layers, in module order."""
    return [path for path, module in model.named_modules() if isinstance(module, CONSTRAINABLE)]


def max_norm_layers(model: nn.Module, globs: Sequence[str] | None) -> list[str]:
    """The layers max-norm constrains: those the globs match, or (None) every Linear and Conv
    but the last one (the output layer: constraining the logits' scale is not dropout's rule)."""
    layers = constrainable_layers(model)
    if globs is None:
        return layers[:-1]
    missing = unmatched_globs(layers, globs)
    if missing:
        raise ValueError(f"max-norm glob {missing[0]!r} matches none of the layers {layers}")
    return [path for path in layers if any(fnmatch.fnmatchcase(path, g) for g in globs)]


class MaxNorm:
    """Keeps every unit's incoming weight vector of the chosen layers at norm <= c."""

    def __init__(self, model: nn.Module, layers: Sequence[str], max_norm: float) -> None:
        self.weights = [stored_weight(model.get_submodule(path)) for path in layers]
        self.max_norm = max_norm

    @torch.no_grad()
    def __call__(self) -> None:
        for weight in self.weights:
            renorm_rows_(weight, self.max_norm)
