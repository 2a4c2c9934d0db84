"""Optimizers for stacked members: SGD (momentum, nesterov), Adam and AdamW, one lr, momentum /
betas and weight decay per member, with each member's max-norm constraint in the same pass.

Written out because torch.optim takes one lr per parameter tensor, and here a tensor holds K
members. Each update is one function over a whole parameter tensor, and one step updates every
parameter in one call: compiled (torch.compile), that is one graph (one set of guards, one launch
of each parameter's fused kernels), where an eager update makes about ten passes per parameter.
Bias corrections, schedule and step count live on the device, so a step needs no host sync and
never recompiles. With bf16 storage the update is computed in fp32 and stored with stochastic
rounding (member-keyed random bits), so updates far smaller than bf16's resolution still move the
weights on average.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from droptune.models.stacked import StackedMLP, compiled, member_keys, random_bits

EPS = 1e-8
PERSISTENT_ROW = 1024  # the longest row inductor reduces in one block (a persistent reduction)


def _store_(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], keys: torch.Tensor) -> None:
    """Each target <- its value (fp32); to bf16 by stochastic rounding: add 16 random bits below
    bf16's last mantissa bit and truncate (rounds up with probability equal to the dropped
    fraction). Two targets share one 32-bit draw per element, 16 bits each: half the hashing of
    one draw per tensor, in the step and in its compiled graph."""
    bits = None
    for index, (target, value) in enumerate(pairs):
        if target.dtype == torch.float32:
            continue  # updated in place
        if index % 2 == 0 or bits is None:
            bits = random_bits(member_keys(keys, index // 2), value.shape[1], value.shape[2])
        noise = (bits >> (16 * (index % 2))) & 0xFFFF
        rounded = (value.view(torch.int32) + noise) & -65536  # 0xFFFF0000
        target.copy_(rounded.view(torch.float32))


def _constrain_(p: torch.Tensor, max_norm: torch.Tensor) -> None:
    """Each unit's incoming weights (last dim) to norm <= its member's c (inf: no constraint), in
    place.

    Every size is symbolic, so inductor cannot know a row fits one block and reduces it in a loop,
    then loops again to store: the update reads p, its gradient and state twice. The branch below
    puts a guard on the fan-in that bounds it in this graph; under the bound the compiled update
    is a persistent reduction, each unit's row in registers, one pass (wider rows: a second graph).
    """
    if p.shape[2] <= PERSISTENT_ROW:
        torch._check(p.shape[2] <= PERSISTENT_ROW)
    norm = p.norm(dim=2, keepdim=True)
    p.mul_(torch.clamp(max_norm / norm.clamp_min(1e-12), max=1.0))


# The updates work in fp32 on `x.float()`: with fp32 storage that is the tensor itself, updated in
# place (eager: about half the passes and none of the allocations of a functional update); with
# bf16 a copy, stored back by _store_.


def adam_update_(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    lr: torch.Tensor,
    beta1: torch.Tensor,
    beta2: torch.Tensor,
    weight_decay: torch.Tensor,
    t: torch.Tensor,
    max_norm: torch.Tensor,
    keys: torch.Tensor,
    decoupled: bool,
    constrain: bool,
) -> None:
    """One Adam (decoupled: AdamW) step of a stacked parameter, then its max-norm; in place."""
    p32, g32, m32, v32 = p.float(), g.float(), m.float(), v.float()
    if decoupled:
        p32.mul_(1.0 - lr * weight_decay)
    else:
        g32.addcmul_(weight_decay, p32)
    m32.lerp_(g32, 1.0 - beta1)
    v32.lerp_(g32 * g32, 1.0 - beta2)
    denominator = (v32 / (1.0 - beta2**t)).sqrt_().add_(EPS)
    p32.addcdiv_(m32 * (lr / (1.0 - beta1**t)), denominator, value=-1.0)
    if constrain:
        _constrain_(p32, max_norm)
    _store_([(p, p32), (m, m32), (v, v32)], member_keys(keys, t.long()))


def sgd_update_(
    p: torch.Tensor,
    g: torch.Tensor,
    buf: torch.Tensor,
    lr: torch.Tensor,
    momentum: torch.Tensor,
    weight_decay: torch.Tensor,
    t: torch.Tensor,
    max_norm: torch.Tensor,
    keys: torch.Tensor,
    nesterov: bool,
    constrain: bool,
) -> None:
    """One SGD step (torch.optim.SGD's rule, dampening 0) of a stacked parameter, then its
    max-norm; in place. The buffer starts at zero, so the first step's buffer is the gradient."""
    p32, g32, buf32 = p.float(), g.float(), buf.float()
    g32.addcmul_(weight_decay, p32)
    buf32.mul_(momentum).add_(g32)
    update = g32.addcmul_(momentum, buf32) if nesterov else buf32
    p32.addcmul_(update, lr, value=-1.0)
    if constrain:
        _constrain_(p32, max_norm)
    _store_([(p, p32), (buf, buf32)], member_keys(keys, t.long()))


def adam_step_(
    params: Sequence[torch.Tensor],
    states: Sequence[Sequence[torch.Tensor]],
    keys: Sequence[torch.Tensor],
    constrained: Sequence[bool],
    lr: torch.Tensor,
    beta1: torch.Tensor,
    beta2: torch.Tensor,
    weight_decay: torch.Tensor,
    t: torch.Tensor,
    max_norm: torch.Tensor,
    decoupled: bool,
) -> None:
    """Every parameter's Adam update, step count included: one compiled graph per step."""
    t.add_(1)
    for p, (m, v), k, constrain in zip(params, states, keys, constrained, strict=True):
        adam_update_(
            p, p.grad, m, v, lr, beta1, beta2, weight_decay, t, max_norm, k, decoupled, constrain
        )


def sgd_step_(
    params: Sequence[torch.Tensor],
    states: Sequence[Sequence[torch.Tensor]],
    keys: Sequence[torch.Tensor],
    constrained: Sequence[bool],
    lr: torch.Tensor,
    momentum: torch.Tensor,
    weight_decay: torch.Tensor,
    t: torch.Tensor,
    max_norm: torch.Tensor,
    nesterov: bool,
) -> None:
    """Every parameter's SGD update, step count included: one compiled graph per step."""
    t.add_(1)
    for p, (buf,), k, constrain in zip(params, states, keys, constrained, strict=True):
        sgd_update_(p, p.grad, buf, lr, momentum, weight_decay, t, max_norm, k, nesterov, constrain)


class StackedOptimizer:
    """Per-member hyperparameters as (K, 1, 1) device tensors; `step()` updates every parameter of
    a StackedMLP, constraint included, in one call. `compile` makes that call one graph."""

    def __init__(
        self,
        net: StackedMLP,
        name: str,
        optim_configs: Sequence[Mapping[str, Any]],
        compile: bool = False,
    ) -> None:
        device = net.seeds.device

        def column(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor([[[float(x)]] for x in values], device=device)  # not a view

        self.net, self.name = net, name
        self.nesterov = name == "sgd" and optim_configs[0]["nesterov"]
        self.hyper = {
            "lr": column([o["lr"] for o in optim_configs]),
            "weight_decay": column([o["weight_decay"] for o in optim_configs]),
        }
        if name == "sgd":
            self.hyper["momentum"] = column([o["momentum"] for o in optim_configs])
        else:
            betas = [o["betas"] for o in optim_configs]
            self.hyper["beta1"] = column([b[0] for b in betas])
            self.hyper["beta2"] = column([b[1] for b in betas])
        self.lr = self.hyper["lr"]  # times the shared schedule's factor (set_lr_scale)
        self.lr_scale = 1.0
        self.constrained = net.constrained()
        self.t = torch.zeros((), device=device)  # steps taken
        slots = 1 if name == "sgd" else 2
        self.state = [[torch.zeros_like(p) for _ in range(slots)] for p in net.parameters()]
        # per parameter: a member-keyed stream for stochastic rounding
        self.keys = [member_keys(net.seeds, 1000 + i) for i in range(len(self.state))]
        step = sgd_step_ if name == "sgd" else adam_step_
        self._step: Callable[..., None] = compiled(step) if compile else step

    @torch.no_grad()
    def step(self) -> None:
        sgd = self.name == "sgd"
        rule = {"nesterov": self.nesterov} if sgd else {"decoupled": self.name == "adamw"}
        self._step(
            params=list(self.net.parameters()),
            states=self.state,
            keys=self.keys,
            constrained=self.constrained,
            lr=self.lr,
            t=self.t,
            max_norm=self.net.max_norms,
            **{name: value for name, value in self.hyper.items() if name != "lr"},
            **rule,
        )

    def set_lr_scale(self, scale: float) -> None:
        """The schedule's factor, set once per epoch (not multiplied in every step)."""
        self.lr_scale = scale
        self.lr = self.hyper["lr"] * scale

    def keep(self, members: torch.Tensor) -> None:
        """Follow StackedMLP.keep: only the surviving members' rows."""
        self.hyper = {name: value[members] for name, value in self.hyper.items()}
        self.set_lr_scale(self.lr_scale)
        self.state = [[slot[members] for slot in state] for state in self.state]
        self.keys = [keys[members] for keys in self.keys]
