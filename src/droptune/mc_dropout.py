"""MC dropout (Gal & Ghahramani, ICML 2016): dropout kept on at test time and T stochastic passes
averaged into one predictive distribution, whose log-likelihood and calibration are often better
than the deterministic pass's. torch has no MC-dropout evaluation; it is this loop."""

from __future__ import annotations

import torch
from torch import nn

from droptune.models.sites import dropout_modules


@torch.no_grad()
def mc_log_probabilities(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """log of the mean of softmax(model(x)) over `samples` passes with every dropout site in
    training mode and every other module as it is (a model in eval mode keeps batch norm's
    running statistics). The masks come from torch's random stream, as training's do."""
    sites = [site for site in dropout_modules(model).values() if not site.training]
    for site in sites:
        site.train()
    try:
        total = sum(model(x).float().softmax(1) for _ in range(samples))
    finally:
        for site in sites:
            site.eval()
    return (total / samples).clamp_min(torch.finfo(torch.float32).tiny).log()
