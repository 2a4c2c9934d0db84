"""A LightningModule of one's own: its own loss, optimizer and logging (`val/acc`)."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F

from examples.mynets.nets import SmallConvNet


class LitConvNet(L.LightningModule):
    def __init__(self, in_channels: int, n_classes: int, lr: float = 0.05, width: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = SmallConvNet(in_channels, n_classes, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class SilentConvNet(LitConvNet):
    """The same module logging its accuracy under another name (`val_accuracy`)."""

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.log("val_accuracy", (self(x).argmax(1) == y).float().mean(), on_epoch=True)
