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


class PlainMLP(nn.Module):
    """The MLP a user would write: input dropout, then (Linear, ReLU, Dropout) per hidden layer."""

    def __init__(self, in_features: int, n_classes: int, width: int = 512, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(0.2)]
        for i in range(depth):
            layers += [
                nn.Linear(in_features if i == 0 else width, width),
                nn.ReLU(),
                nn.Dropout(0.5),
            ]
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
