"""K MLPs of one shape family trained as one: parameters stacked along a leading member axis.

Each member keeps everything a trial samples: its own widths (padded to the group's widest, the
padding masked so each member computes exactly its own narrower network), dropout rates at every
site, max-norm c, initialisation, data order and dropout masks. Randomness is counter-based (a hash
of the member's seed, the step, the site and the unit), so a member's masks and data order do not
depend on which other members share its group, and the masks can be generated inside a compiled
kernel instead of being read from memory.

Weights are stored (K, out, in): a unit's incoming weights are contiguous, so the max-norm of a unit
is a contiguous reduction that the optimizer's single pass can do (see stacked_optim).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.fx.experimental._config as fx_config
from torch import nn
from torch.nn import functional as F

from droptune.models.nets import ACTIVATIONS

FUSED_VARIANTS = ("inverted", "classic", "gaussian")
STORAGE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 64-bit integer hash (splitmix64's finaliser, on signed int64 with wrap-around): for the
    few per-member keys of a step."""
    x = x ^ ((x >> 30) & 0x3FFFFFFFF)
    x = x * -4658895280553007687  # 0xbf58476d1ce4e5b9
    x = x ^ ((x >> 27) & 0x1FFFFFFFFF)
    x = x * -7723592293110705685  # 0x94d049bb133111eb
    return x ^ ((x >> 31) & 0x1FFFFFFFF)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (murmur3's finaliser, on signed int32 with wrap-around): for every
    element of a mask. Half the bytes of a 64-bit hash, and CPUs without AVX-512 (and GPUs)
    multiply 32-bit integers natively: about 1.7x faster per mask on a 2-core CPU."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * -2048144789  # 0x85ebca6b
    x = x ^ ((x >> 13) & 0x7FFFF)
    x = x * -1028477387  # 0xc2b2ae35
    return x ^ ((x >> 16) & 0xFFFF)


def random_bits(keys: torch.Tensor, *shape: int) -> torch.Tensor:
    """Hashed int32 bits of shape (K, *shape), one stream per member key (K,) int64.

    Element (i, j) draws from counter i * 2**16 + j: the same value whatever the padded width
    (rows and columns below 2**16; a one-dimensional draw, below 2**32).
    """
    offsets = torch.arange(shape[-1], device=keys.device, dtype=torch.int32)
    if len(shape) == 2:
        rows = torch.arange(shape[0], device=keys.device, dtype=torch.int32)
        offsets = (rows.view(-1, 1) << 16) + offsets.view(1, -1)
    keys32 = (keys & 0x7FFFFFFF).to(torch.int32).view(-1, *([1] * len(shape)))
    return _mix32(keys32 + offsets.unsqueeze(0) * -1640531535)  # 0x9e3779b1: spreads counters


def uniform(keys: torch.Tensor, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) floats of shape (K, *shape) from random_bits (24 bits each)."""
    return ((random_bits(keys, *shape) >> 8) & 0xFFFFFF).to(torch.float32).mul_(2.0**-24)


def compiled(fn: Callable) -> Callable:
    """torch.compile for stacked groups. Group size, widths and the last batch change between
    groups and as members leave, so every size is symbolic (parameters' too: torch treats those
    as static by default) and a study compiles each function a few times, not once per group."""
    torch._dynamo.config.force_parameter_static_shapes = False
    # sizes that happen to be equal in the first group (two layers' padded widths, say) stay
    # separate symbols: unified, the next group without that equality would compile again
    fx_config.use_duck_shape = False
    # one graph per dtype, train / eval and set of variants in use; past the limit: eager, not an error
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    # a compiler failure (a missing toolchain, say) runs the function eagerly, with a warning,
    # instead of failing every trial of the group
    torch._dynamo.config.suppress_errors = True
    return torch.compile(fn, dynamic=True)


def member_keys(seeds: torch.Tensor, *counters: int | torch.Tensor) -> torch.Tensor:
    """One key per member for one use (epoch / step / site): hash of the seed and counters."""
    key = seeds
    for counter in counters:
        key = _mix(key * 31 + counter)
    return key


class StackedMLP(nn.Module):
    """K fully connected classifiers; forward takes (K, B, in_dim) and returns (K, B, n_classes).

    `dtype` is the storage and compute type of weights and activations (bf16 halves the bytes each
    step moves; matmuls still accumulate in fp32).
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        widths: Sequence[Sequence[int]],
        seeds: Sequence[int],
        input_rates: Sequence[float],
        hidden_rates: Sequence[Sequence[float]],
        output_rates: Sequence[float],
        max_norms: Sequence[float | None],
        activation: str = "relu",
        placements: Sequence[str] | None = None,
        variants: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        placements = list(placements or ["after"] * len(widths))
        variants = list(variants or ["inverted"] * len(widths))
        for variant in variants:
            if variant not in FUSED_VARIANTS:
                raise ValueError(f"fused variant {variant!r} is not one of {FUSED_VARIANTS}")
        depths = {len(w) for w in widths}
        if len(depths) != 1:
            raise ValueError(f"a group shares its depth; got depths {sorted(depths)}")
        self.activation = ACTIVATIONS[activation]()
        k, depth = len(widths), depths.pop()
        sizes = [[in_dim, *w, n_classes] for w in widths]
        padded = [max(s[i] for s in sizes) for i in range(depth + 2)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(depth + 1):
            weight = torch.zeros(k, padded[layer + 1], padded[layer])
            bias = torch.zeros(k, 1, padded[layer + 1])
            for member, (size, seed) in enumerate(zip(sizes, seeds, strict=True)):
                fan_in, fan_out = size[layer], size[layer + 1]
                generator = torch.Generator().manual_seed(int(seed) * 1009 + layer)
                bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init
                weight[member, :fan_out, :fan_in] = torch.empty(fan_out, fan_in).uniform_(
                    -bound, bound, generator=generator
                )
                bias[member, 0, :fan_out] = torch.empty(fan_out).uniform_(
                    -bound, bound, generator=generator
                )
            self.weights.append(nn.Parameter(weight.to(dtype)))
            self.biases.append(nn.Parameter(bias.to(dtype)))
        units = torch.zeros(k, depth, max(padded[1:-1]), dtype=dtype)
        for member, size in enumerate(sizes):
            for layer in range(depth):
                units[member, layer, : size[layer + 1]] = 1.0
        self.register_buffer("unit_mask", units)
        self.register_buffer("seeds", torch.tensor([int(s) for s in seeds], dtype=torch.int64))
        self.register_buffer("input_rates", torch.tensor(input_rates, dtype=torch.float32))
        self.register_buffer(
            "hidden_rates", torch.tensor([list(r) for r in hidden_rates], dtype=torch.float32)
        )
        self.register_buffer("output_rates", torch.tensor(output_rates, dtype=torch.float32))
        # each member's dropout schedule factor of the current epoch (schedules.py), on all its rates
        self.register_buffer("rate_scales", torch.ones(k, dtype=torch.float32))
        norms = [math.inf if c is None else float(c) for c in max_norms]
        # (K, 1, 1) columns are built whole, not as views: a view's base would be guarded by a
        # compiled step, and the columns that keep() leaves are not views
        self.register_buffer("max_norms", torch.tensor([[[c]] for c in norms]))
        # per member: which variant (index into FUSED_VARIANTS) and whether dropout precedes the activation
        codes = [FUSED_VARIANTS.index(v) for v in variants]
        self.register_buffer("variant_codes", torch.tensor([[[c]] for c in codes]))
        before = [p == "before" for p in placements]
        self.register_buffer("before", torch.tensor([[[b]] for b in before]))
        # advances the dropout streams; a tensor so that a compiled forward is not recompiled per step
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self._set_branches(codes, before)

    def _set_branches(self, codes: Sequence[int], before: Sequence[bool]) -> None:
        """Which code paths any member needs, as Python flags (no device sync in forward): the
        variants and placement in use, and the sites where some member drops (a site every member
        leaves at rate 0 draws no mask)."""
        self.any_classic = FUSED_VARIANTS.index("classic") in codes
        self.any_gaussian = FUSED_VARIANTS.index("gaussian") in codes
        self.any_before = any(before)
        rates = (self.input_rates[:, None], self.hidden_rates, self.output_rates[:, None])
        self.dropping = torch.cat(rates, dim=1).ne(0).any(0).tolist()  # per site

    def _dropout(self, h: torch.Tensor, rates: torch.Tensor, site: int) -> torch.Tensor:
        """Each member's own variant: inverted (keep / (1 - p)), classic (keep; x (1 - p) at
        inference) or gaussian (1 + sqrt(p / (1 - p)) N(0, 1)), from the member's own stream."""
        if not self.dropping[site]:
            return h
        p = rates.view(-1, 1, 1)
        classic = self.variant_codes == 1
        if not self.training:
            return h * torch.where(classic, 1.0 - p, 1.0).to(h.dtype) if self.any_classic else h
        u = uniform(member_keys(self.seeds, self.step, site), h.shape[1], h.shape[2])
        kept = torch.where(classic, 1.0, 1.0 / (1.0 - p)) if self.any_classic else 1.0 / (1.0 - p)
        factor = torch.where(u >= p, kept, 0.0)  # a kept unit's factor, (K, 1, 1): one pass
        if self.any_gaussian:
            noise = torch.erfinv(u.clamp(1e-7, 1 - 1e-7) * 2 - 1) * math.sqrt(2)  # N(0, 1)
            factor = torch.where(
                self.variant_codes == 2, 1.0 + torch.sqrt(p / (1.0 - p)) * noise, factor
            )
        return h * factor.to(h.dtype)

    def rates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rates in effect, per member: input (K,), hidden (K, depth), output (K,): the
        members' targets times their schedule's factor."""
        scales = self.rate_scales
        return (
            self.input_rates * scales,
            self.hidden_rates * scales[:, None],
            self.output_rates * scales,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_rates, hidden_rates, output_rates = self.rates()
        h = self._dropout(x, input_rates, 0)
        depth = len(self.weights) - 1
        for layer in range(depth):
            width = self.weights[layer].shape[1]
            z = torch.baddbmm(self.biases[layer], h, self.weights[layer].transpose(1, 2))
            mask = self.unit_mask[:, layer : layer + 1, :width]
            rates = hidden_rates[:, layer]
            after = self._dropout(self.activation(z) * mask, rates, layer + 1)
            if self.any_before:  # members with dropout before the activation (same masks)
                before = self.activation(self._dropout(z, rates, layer + 1)) * mask
                after = torch.where(self.before, before, after)
            h = after
        h = self._dropout(h, output_rates, depth + 1)
        return torch.baddbmm(self.biases[-1], h, self.weights[-1].transpose(1, 2))

    def constrained(self) -> list[bool]:
        """Per parameter (as parameters() lists them): whether max-norm applies (hidden units'
        incoming weights; not the output layer, not biases)."""
        n = len(self.weights)
        return [i < n - 1 for i in range(n)] + [False] * len(self.biases)

    def keep(self, members: torch.Tensor, narrow_branches: bool = True) -> None:
        """Drop every member not in `members` (a pruned trial leaves; the GPU's work shrinks).

        `narrow_branches`: also drop the code paths (variants, placement) no survivor uses. That
        saves work in eager mode; a compiled step would see a new graph to compile instead."""
        for params in (self.weights, self.biases):
            for i, p in enumerate(params):
                params[i] = nn.Parameter(p.detach()[members])
        for name in (
            "unit_mask",
            "seeds",
            "input_rates",
            "hidden_rates",
            "output_rates",
            "rate_scales",
            "max_norms",
            "variant_codes",
            "before",
        ):
            setattr(self, name, getattr(self, name)[members])
        if narrow_branches:
            self._set_branches(
                self.variant_codes.flatten().tolist(), self.before.flatten().tolist()
            )


def stacked_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy (K, B), from logits (K, B, C) and labels (K, B), in fp32."""
    k, b, c = logits.shape
    return F.cross_entropy(
        logits.reshape(k * b, c).float(), y.reshape(k * b), reduction="none"
    ).view(k, b)
