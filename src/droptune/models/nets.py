"""Plain nn.Modules for dropout studies: every dropout site is explicit and independently rated."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.ops import DropBlock2d

from droptune.models.dropout import VARIANTS, drop_weights, make_dropout, stored_weight

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
PLACEMENTS = ("after", "before")
CONV_MODES = ("element", "channel", "block")


@dataclass(frozen=True)
class Dropout:
    """Where dropout goes and how strong it is.

    input: rate on the visible units. hidden: one rate for every hidden layer, or one per layer.
    placement: hidden dropout after the activation (Srivastava et al.) or before it.
    variant dropconnect: each site's rate drops the single weights leading out of its units
    (those of the next Linear) instead of the units; placement means nothing to it.
    output: an extra site right before the output layer (off by default; it stacks with the last
    hidden layer's dropout when placement is "after"). conv / conv_mode: CNN only, after each conv
    block, element-wise, channel-wise (whole feature maps, nn.Dropout2d) or in blocks of
    block_size x block_size (DropBlock, torchvision's DropBlock2d).
    """

    input: float = 0.0
    hidden: float | Sequence[float] = 0.0
    output: float = 0.0
    placement: str = "after"
    variant: str = "inverted"
    conv: float | Sequence[float] = 0.0
    conv_mode: str = "element"
    block_size: int = 3

    def per_layer(self, rates: float | Sequence[float], n_layers: int, name: str) -> list[float]:
        """Expand a float to one rate per layer, or check a list has one rate per layer."""
        if isinstance(rates, int | float):
            return [float(rates)] * n_layers
        rates = [float(r) for r in rates]
        if len(rates) != n_layers:
            raise ValueError(f"dropout.{name} has {len(rates)} rates for {n_layers} layers")
        return rates


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def renorm_rows_(weight: torch.Tensor, max_norm: float) -> None:
    """Max-norm: rescale each unit's incoming weight vector (dim 0 slice) to norm <= max_norm."""
    with torch.no_grad():
        weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=max_norm))


def init_normal_(module: nn.Module, std: float) -> None:
    """Weights ~ N(0, std), biases 0, for every Linear and Conv (d2l's dropout chapter init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """Fully connected classifier: [input dropout] (Linear, act, dropout)* [output dropout] Linear."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        widths: Sequence[int],
        activation_name: str = "relu",
        dropout: Dropout = Dropout(),
        max_norm: float | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        if dropout.placement not in PLACEMENTS:
            raise ValueError(f"dropout.placement {dropout.placement!r} is not one of {PLACEMENTS}")
        if dropout.variant not in VARIANTS:
            raise ValueError(f"dropout.variant {dropout.variant!r} is not one of {VARIANTS}")
        if any(w < 1 for w in widths):
            raise ValueError(f"widths {list(widths)} must all be >= 1")
        hidden_rates = dropout.per_layer(dropout.hidden, len(widths), "hidden")
        connect = dropout.variant == "dropconnect"
        if connect and dropout.output > 0:
            raise ValueError("dropconnect drops the output layer's weights at the last hidden rate")

        def site(rate: float) -> nn.Module:  # under DropConnect: empty, the rate goes to weights
            return make_dropout(0.0 if connect else rate, dropout.variant)

        layers: list[nn.Module] = [nn.Flatten(), site(dropout.input)]
        self.hidden_linears: list[nn.Linear] = []
        previous = in_dim
        for width, rate in zip(widths, hidden_rates, strict=True):
            linear = nn.Linear(previous, width)
            self.hidden_linears.append(linear)
            drop = site(rate)
            if dropout.placement == "before":
                layers += [linear, drop, activation(activation_name)]
            else:
                layers += [linear, activation(activation_name), drop]
            previous = width
        output = nn.Linear(previous, n_classes)
        layers += [site(dropout.output), output]
        self.net = nn.Sequential(*layers)
        self.max_norm = max_norm
        if init_std is not None:
            init_normal_(self, init_std)
        if connect:
            layers_after_sites = [*self.hidden_linears, output]
            rates = [dropout.input, *hidden_rates]
            for layer, rate in zip(layers_after_sites, rates, strict=True):
                drop_weights(layer, rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def apply_max_norm(self) -> None:
        """Called after every optimizer step; a no-op when the constraint is off."""
        if self.max_norm is None:
            return
        for linear in self.hidden_linears:
            renorm_rows_(stored_weight(linear), self.max_norm)


class CNN(nn.Module):
    """Conv blocks (conv, act, pool, conv dropout) then an MLP head with its own dropout sites."""

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        head_widths: Sequence[int] = (128,),
        activation_name: str = "relu",
        pool: str = "max",
        dropout: Dropout = Dropout(),
        max_norm: float | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"CNN needs (channels, height, width) inputs, got {tuple(input_shape)}"
            )
        if dropout.conv_mode not in CONV_MODES:
            raise ValueError(f"dropout.conv_mode {dropout.conv_mode!r} is not one of {CONV_MODES}")
        pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
        if pool not in pools:
            raise ValueError(f"pool {pool!r} is not one of {', '.join(pools)}")
        conv_rates = dropout.per_layer(dropout.conv, len(channels), "conv")
        in_channels, height, width = input_shape
        # DropConnect is the head's (its Linear layers); the input and conv sites drop units
        unit_variant = "inverted" if dropout.variant == "dropconnect" else dropout.variant
        blocks: list[nn.Module] = [make_dropout(dropout.input, unit_variant)]
        self.convs: list[nn.Conv2d] = []
        for out_channels, rate in zip(channels, conv_rates, strict=True):
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
            self.convs.append(conv)
            blocks += [conv, activation(activation_name), pools[pool](2)]
            in_channels, height, width = out_channels, height // 2, width // 2
            blocks.append(_conv_dropout(rate, dropout, unit_variant, min(height, width)))
        if height < 1 or width < 1:
            raise ValueError(
                f"{len(channels)} pooling blocks shrink {tuple(input_shape)} to nothing"
            )
        self.features = nn.Sequential(*blocks)
        head_dropout = Dropout(
            hidden=dropout.hidden,
            output=dropout.output,
            placement=dropout.placement,
            variant=dropout.variant,
        )
        self.head = MLP(
            in_channels * height * width,
            n_classes,
            head_widths,
            activation_name,
            head_dropout,
            max_norm,
        )
        self.max_norm = max_norm
        if init_std is not None:
            init_normal_(self, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def apply_max_norm(self) -> None:
        """Max-norm on every conv filter (its incoming weights) and on the head's hidden units."""
        if self.max_norm is None:
            return
        for conv in self.convs:
            renorm_rows_(conv.weight, self.max_norm)
        self.head.apply_max_norm()


def _conv_dropout(rate: float, dropout: Dropout, variant: str, side: int) -> nn.Module:
    """A conv block's dropout: DropBlock whatever the variant (it rescales what it keeps by the
    kept fraction itself; the variant still applies to the input and the head), its blocks no
    wider than the block's feature maps (`side`: the odd side that fits), or the variant element-
    or channel-wise."""
    if dropout.conv_mode == "block" and rate > 0:
        widest_odd = side if side % 2 else max(side - 1, 1)
        return DropBlock2d(rate, min(dropout.block_size, widest_odd))
    return make_dropout(rate, variant, dropout.conv_mode == "channel")


def hidden_widths(depth: int | None, width: int | None, widths: Sequence[int] | None) -> list[int]:
    """Hidden widths: `widths` when given, else `width` repeated `depth` times."""
    if widths is not None:
        return [int(w) for w in widths]
    return [int(width)] * int(depth)


def build_mlp(
    input_shape: Sequence[int],
    n_classes: int,
    depth: int | None = 2,
    width: int | None = 512,
    widths: Sequence[int] | None = None,
    activation: str = "relu",
    dropout: Mapping[str, Any] | None = None,
    max_norm: float | None = None,
    init_std: float | None = None,
) -> MLP:
    """conf/model/mlp.yaml's target: the config's keys as they are, the input filled in."""
    return MLP(
        in_dim=math.prod(input_shape),
        n_classes=n_classes,
        widths=hidden_widths(depth, width, widths),
        activation_name=activation,
        dropout=Dropout(**(dropout or {})),
        max_norm=max_norm,
        init_std=init_std,
    )


def build_cnn(
    input_shape: Sequence[int],
    n_classes: int,
    channels: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    head_widths: Sequence[int] = (128,),
    activation: str = "relu",
    pool: str = "max",
    dropout: Mapping[str, Any] | None = None,
    max_norm: float | None = None,
    init_std: float | None = None,
) -> CNN:
    """conf/model/cnn.yaml's target."""
    return CNN(
        input_shape=input_shape,
        n_classes=n_classes,
        channels=list(channels),
        kernel_size=kernel_size,
        head_widths=list(head_widths),
        activation_name=activation,
        pool=pool,
        dropout=Dropout(**(dropout or {})),
        max_norm=max_norm,
        init_std=init_std,
    )
