"""MC dropout (Gal & Ghahramani, ICML 2016): dropout kept on at test time and T stochastic passes
averaged into one predictive distribution, whose log-likelihood and calibration are often better
than the deterministic pass's. torch has no MC-dropout evaluation; it is this loop."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from droptune.models.sites import dropout_modules


@torch.no_grad()
def mc_log_probabilities(
    model: nn.Module, x: torch.Tensor, samples: int, holders: Sequence[nn.Module] | None = None
) -> torch.Tensor:
    """log of the mean of softmax(model(x)) over `samples` passes with every dropout site's
    holder (default: the dropout modules) in training mode and every other module as it is (a
    model in eval mode keeps batch norm's running statistics). Only a holder's own flag is set,
    not its children's: an attention block's rate acts, its layer norms stay as they are. The
    masks come from torch's random stream, as training's do."""
    holders = list(dropout_modules(model).values()) if holders is None else holders
    off = [holder for holder in holders if not holder.training]
    for holder in off:
        holder.training = True
    try:
        total = sum(model(x).float().softmax(1) for _ in range(samples))
    finally:
        for holder in off:
            holder.training = False
    return (total / samples).clamp_min(torch.finfo(torch.float32).tiny).log()
