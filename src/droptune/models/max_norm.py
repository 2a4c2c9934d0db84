"""Max-norm (Srivastava et al. 2014, section 5.1): which layers it constrains, and the constraint
applied after each optimizer step."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from droptune.models.dropout import stored_weight
from droptune.models.nets import renorm_rows_

CONSTRAINABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def constrainable_layers(model: nn.Module) -> list[str]:
    """Paths of the Linear and Conv layers, in module order."""
    return [path for path, module in model.named_modules() if isinstance(module, CONSTRAINABLE)]


def max_norm_layers(model: nn.Module, globs: Sequence[str] | None) -> list[str]:
    """The layers max-norm constrains: those the globs match, or (None) every Linear and Conv
    but the last one (the output layer: constraining the logits' scale is not dropout's rule)."""
    layers = constrainable_layers(model)
    if globs is None:
        return layers[:-1]
    missing = [g for g in globs if not fnmatch.filter(layers, g)]
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
