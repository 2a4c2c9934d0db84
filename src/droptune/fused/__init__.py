"""The fused runner: K trials trained in one fit, their parameters stacked along a member axis.

Small dropout-study MLPs leave a GPU nearly idle one at a time; stacked, one step updates every
member with batched matmuls. A group shares what one fit must: model family (MLP), depth, a width
band, activation, optimizer and schedule, batch size and epochs. Everything else a trial samples is
per member: widths, dropout placement, variant and rates at every site, lr, momentum, weight decay,
max-norm c, initialisation, data order and dropout masks. Pruned or failed members leave the group
at the end of an epoch, and the stacked tensors shrink with them.

grouping (which trials share a fit) -> fit (one group's fit: `train_group`) -> module (the
LightningModule of a group) + checkpoint (a member's own state) -> runner (groups to outcomes).
"""

import torch


def use_fused(runner: str, accelerator: str) -> bool:
    """`study.runner` / `report.runner`: fused, standard, or auto: fused on a GPU, where it pays
    (98x the reference loop on an H200), standard on a CPU, where one fit of K members trains
    slower per trial than K plain fits (about 99 s against 49 s a Fashion-MNIST trial at K = 8)."""
    if runner == "auto":
        return accelerator != "cpu" and torch.cuda.is_available()
    return runner == "fused"
