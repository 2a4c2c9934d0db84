"""Expected calibration error (Guo et al., ICML 2017) from sums a training loop can keep on the
device: per confidence bin, how many predictions, their summed confidence and how many were right.

torchmetrics' CalibrationError computes the same from stored predictions, at ~0.3 ms of Python per
update and compute on a 2-core CPU: as much as a small network's step, every epoch, for every part
evaluated. The bins here are torchmetrics' (tests compare the two), added batch by batch, and the
fused runner keeps one set per member.
"""

from __future__ import annotations

import torch

ECE_BINS = 15  # torchmetrics' default


_EDGES: dict[torch.device, torch.Tensor] = {}


def _edges(device: torch.device) -> torch.Tensor:
    """The bins' edges, made once per device (a tensor made per batch is an op per batch)."""
    if device not in _EDGES:
        _EDGES[device] = torch.linspace(0, 1, ECE_BINS + 1, device=device)
    return _EDGES[device]


def calibration_bins(
    confidence: torch.Tensor, hits: torch.Tensor, own: torch.Tensor | None = None
) -> torch.Tensor:
    """Top-class probabilities and whether the top class was right, (B,) or (K, B) for K
    stacked members -> per bin the count, the confidence sum and the correct count: (3, S) or
    (K, 3, S), S = ECE_BINS + 1. Binned as torchmetrics bins (bucketize on ECE_BINS + 1 edges
    from 0 to 1, so a confidence of exactly 1 has a bin of its own)."""
    slots = ECE_BINS + 1
    index = torch.bucketize(confidence, _edges(confidence.device), right=True) - 1
    rows = confidence.numel() // confidence.shape[-1]
    if confidence.dim() > 1:  # each member's bins after the previous member's
        index = index + torch.arange(rows, device=confidence.device)[:, None] * slots
    values = torch.stack((torch.ones_like(confidence), confidence, hits.to(confidence.dtype)))
    if own is not None:  # rows of a stacked member's own split count; its padding does not
        values = values * own.to(confidence.dtype)
    bins = confidence.new_zeros(3, rows * slots).index_add_(1, index.flatten(), values.flatten(1))
    return bins if confidence.dim() == 1 else bins.view(3, rows, slots).transpose(0, 1)


def expected_calibration_error(bins: torch.Tensor) -> torch.Tensor:
    """sum over bins |correct - confidence| / count, for bins (..., 3, ECE_BINS + 1)."""
    count, confidence, correct = bins.unbind(-2)
    return (correct - confidence).abs().sum(-1) / count.sum(-1)
