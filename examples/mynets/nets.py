"""A small convolutional net with three named dropout sites of two kinds: channel-wise on the
feature maps (`features.2`), element-wise in the encoder and the head (`encoder.drop`, `head.drop`)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class SmallConvNet(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, width: int = 32, p: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Dropout2d(p),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.encoder = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                linear=nn.Linear(16 * 4 * 4, width),
                act=nn.ReLU(),
                drop=nn.Dropout(p),
            )
        )
        self.head = nn.Sequential(OrderedDict(drop=nn.Dropout(p), out=nn.Linear(width, n_classes)))

    def forward(self, x):
        return self.head(self.encoder(self.features(x)))
