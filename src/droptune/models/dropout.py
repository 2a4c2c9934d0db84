"""Dropout variants behind one factory, so a model names a variant instead of a class.

`inverted` and `alpha` are PyTorch's own modules. `classic` (Srivastava et al. 2014: keep units
unscaled while training, scale by 1 - p at inference) and `gaussian` (multiplicative N(1, p/(1-p)))
have no PyTorch module, so they are written here, each with an element-wise and a channel-wise form.
`dropconnect` (Wan et al. 2013) drops a layer's weights instead of units: `WeightDropout`, a torch
parametrization of the weight that the model registers on the layer after a site. `concrete` (Gal
et al. 2017) learns its rate: no PyTorch module either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, RelaxedBernoulli
from torch.nn.utils import parametrize

SITE_VARIANTS = ("inverted", "classic", "gaussian", "alpha", "concrete")  # modules at a site
VARIANTS = (*SITE_VARIANTS, "dropconnect")


class MaskDropout(nn.Module):
    """Shared shape logic: element-wise masks, or one draw per (sample, channel) for feature maps."""

    def __init__(self, p: float, channelwise: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate p={p!r} must be in [0, 1)")
        self.p = p
        self.channelwise = channelwise

    def _noise_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        if self.channelwise and x.dim() > 2:
            return (*x.shape[:2], *([1] * (x.dim() - 2)))
        return tuple(x.shape)

    def extra_repr(self) -> str:
        return f"p={self.p}, channelwise={self.channelwise}"


class ClassicDropout(MaskDropout):
    """Bernoulli keep-mask without rescaling in training; inference multiplies by 1 - p."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1.0 - self.p)
        keep = torch.empty(self._noise_shape(x), device=x.device, dtype=x.dtype)
        return x * keep.bernoulli_(1.0 - self.p)


class GaussianDropout(MaskDropout):
    """Multiplicative N(1, p / (1 - p)) noise: the same mean and variance as inverted dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        std = (self.p / (1.0 - self.p)) ** 0.5
        noise = torch.empty(self._noise_shape(x), device=x.device, dtype=x.dtype)
        return x * noise.normal_(1.0, std)


class ConcreteDropout(MaskDropout):
    """Concrete dropout (Gal, Hron & Kendall, NeurIPS 2017): the rate is a parameter, learned by
    gradient through a relaxed Bernoulli mask (temperature 0.1, the paper's), kept units scaled
    by 1 / (1 - p) so evaluation passes them through. The training loss adds
    `regularization()`, the paper's dropout term: K (p log p + (1 - p) log(1 - p)) for K units
    an example, weighted by 2 / N (N training examples); its weight term, l^2 / N times the
    next layer's squared weights over 1 - p, is below 1e-12 a weight at the paper's length scale
    (l = 1e-4) and is left to the optimizer's weight decay. `p` reads the rate now."""

    TEMPERATURE = 0.1

    def __init__(self, p: float, channelwise: bool = False) -> None:
        nn.Module.__init__(self)  # MaskDropout's own keeps p as a number; here it is a parameter
        self.logit = nn.Parameter(torch.zeros(()))
        self.channelwise = channelwise
        self.p = p
        self.units = 0  # K: units an example (channels when channel-wise), from the last pass

    @property
    def p(self) -> float:
        if self.logit.is_meta:  # built without memory (`make sites`): the rate it starts at
            return self._start
        return float(torch.sigmoid(self.logit.detach()))

    @p.setter
    def p(self, rate: float) -> None:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"concrete dropout's starting rate p={rate!r} must be in (0, 1)")
        self._start = rate
        with torch.no_grad():
            self.logit.fill_(math.log(rate) - math.log1p(-rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        shape = self._noise_shape(x)
        self.units = math.prod(shape[1:])
        relaxed = RelaxedBernoulli(self.TEMPERATURE, logits=self.logit, validate_args=False)
        drop = relaxed.rsample(shape).to(x.dtype)
        return x * (1 - drop) / (1 - torch.sigmoid(self.logit))

    def regularization(self) -> torch.Tensor:
        """The dropout term of the site's KL, before the 2 / N weight: minus its entropy per
        unit, times the units, lowest at p = 0.5."""
        return -self.units * Bernoulli(logits=self.logit, validate_args=False).entropy()

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}, channelwise={self.channelwise}"


class WeightDropout(nn.Module):
    """DropConnect: each weight of the layer zeroed with probability p while training, the kept
    ones scaled by 1 / (1 - p), so evaluation uses the weights themselves (their expectation).
    One mask per forward pass, shared by the batch (Wan et al. draw one per example: a weight
    matrix per example, which no dense layer computes at a plain layer's cost)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate p={p!r} must be in [0, 1)")
        self.p = p

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return F.dropout(weight, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_weights(layer: nn.Module, p: float) -> None:
    """DropConnect on `layer`'s weight at rate p (nothing at 0: an unused site costs nothing)."""
    if p > 0.0:
        parametrize.register_parametrization(layer, "weight", WeightDropout(p))


def stored_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a layer keeps (under DropConnect, the one its parametrization reads): what
    max-norm and initialisation write to."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def variant_module(p: float, variant: str = "inverted", channelwise: bool = False) -> nn.Module:
    """The dropout module of a variant, even at rate 0 (a site of a user's model stays a site)."""
    if variant not in SITE_VARIANTS:
        raise ValueError(f"dropout variant {variant!r} is not one of {', '.join(SITE_VARIANTS)}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate p={p!r} must be in [0, 1)")
    if variant == "inverted":
        return nn.Dropout2d(p) if channelwise else nn.Dropout(p)
    if variant == "alpha":
        return nn.FeatureAlphaDropout(p) if channelwise else nn.AlphaDropout(p)
    if variant == "classic":
        return ClassicDropout(p, channelwise)
    if variant == "concrete":
        return ConcreteDropout(p, channelwise)
    return GaussianDropout(p, channelwise)


def make_dropout(p: float, variant: str = "inverted", channelwise: bool = False) -> nn.Module:
    """One site of droptune's own models; rate 0 gives an Identity so an unused site costs nothing."""
    return nn.Identity() if p == 0.0 else variant_module(p, variant, channelwise)
