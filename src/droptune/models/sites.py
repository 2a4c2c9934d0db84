"""Dropout sites of any nn.Module: found by walking the module tree, set by glob or role, swapped
by variant, proven by a forward pass where only a name says they are dropout.

A site is a place where dropout happens and the float attribute that sets its rate. Each kind's
rate is read by its holder's forward at every call, so setting it changes what the next pass does:

- `module`: torch's dropout modules, torchvision's DropBlock and droptune's variants read `p`;
- `attention`: nn.MultiheadAttention passes `dropout` to F.multi_head_attention_forward;
- `recurrent`: nn.RNN / LSTM / GRU pass `dropout` to their kernel, which drops between layers
  only, so a 1-layer RNN's rate is no site;
- `path`: torchvision's StochasticDepth reads `p`; the DropPath of timm and most research code
  reads `drop_prob`;
- `float`: any other float attribute whose name says dropout (`drop_rate`, `attention_dropout`,
  `dropout_p`, ...), read by code this module cannot see (F.dropout, scaled_dot_product_attention's
  dropout_p): a candidate until a forward pass shows that it acts (`prove`);
- `declared`: a class and attribute named in `model.dropout.kinds`, a candidate too.

A user's model has every site proven (its forward may never call a dropout module it holds); a
model that takes no probe batch keeps the sites its classes say, and loses its candidates.

A site's path is its holder's module path (`encoder.layers.0.self_attn`), or for `float` and
`declared` the holder's path and the attribute (`blocks.0.attn.attn_p`). Its role is the path with
its block indices taken out (`encoder.layers.*.dropout1`): the unit a search gives one rate.
PyTorch has no registry of dropout-like modules, so the classes are listed here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import DropBlock2d, DropBlock3d, StochasticDepth

from droptune.models.dropout import (
    ClassicDropout,
    ConcreteDropout,
    GaussianDropout,
    MaskDropout,
    WeightDropout,
    variant_module,
)

# torch's own dropout modules share `_DropoutNd` (private); listed by name so a new torch that
# moves the base class still finds every one of them
TORCH_DROPOUTS: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
DROPOUT_TYPES = (
    *TORCH_DROPOUTS,
    DropBlock2d,
    DropBlock3d,
    ClassicDropout,
    GaussianDropout,
    ConcreteDropout,
    WeightDropout,  # DropConnect, at `<layer>.parametrizations.weight.0`
)
CHANNELWISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout)
INVERTED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
KINDS = ("module", "attention", "recurrent", "path", "float", "declared")
# an attribute whose name holds this is a candidate rate: drop, dropout, drop_rate, drop_prob,
# dropout_prob, attention_dropout, activation_dropout, dropout_p, encoder_layerdrop, ...
DROPOUT_NAME = re.compile(r"drop", re.IGNORECASE)
# a block index: a whole path segment (`layers.3`) or one after an underscore (`encoder_layer_3`)
BLOCK_INDEX = re.compile(r"^\d+$|(?<=_)\d+$")
PROBE_RATE = 0.9  # the high rate a candidate is tried at against 0
PROBE_EXAMPLES = 4


@dataclass(frozen=True)
class Site:
    """One place where dropout happens: where, what kind, whose attribute, how strong."""

    path: str
    kind: str
    cls: str  # the holder's class
    rate: float
    holder: str = ""  # the module path of the module that holds the rate
    attribute: str = "p"

    @property
    def role(self) -> str:
        return role_of(self.path)

    @property
    def source(self) -> str:
        """Where the rate lives: a dropout module's class (`Dropout`), else the class and its
        attribute (`MultiheadAttention.dropout`)."""
        return self.cls if self.kind == "module" else f"{self.cls}.{self.attribute}"


@dataclass(frozen=True)
class Inert:
    """A rate that is no site: where it is and why setting it changes nothing."""

    site: Site
    reason: str


@dataclass(frozen=True)
class Walk:
    """A model's sites (`sites`: they act by their class; `candidates`: floats found by name
    and declared kinds, which act only if `prove` says so) and the rates that are no site."""

    sites: list[Site]
    candidates: list[Site]
    inert: list[Inert]

    @property
    def settable(self) -> list[Site]:
        return [*self.sites, *self.candidates]


def role_of(path: str) -> str:
    """`encoder.layers.3.dropout1` -> `encoder.layers.*.dropout1`; the last segment is the site's
    own name (`head.2` of a Sequential stays `head.2`)."""
    *blocks, name = path.split(".")
    return ".".join([*(BLOCK_INDEX.sub("*", segment) for segment in blocks), name])


def dropout_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every dropout module of `model` by its path from `model`, in module order."""
    return {path: m for path, m in model.named_modules() if isinstance(m, DROPOUT_TYPES)}


def _known(module: nn.Module) -> tuple[str, str] | None:
    """(kind, attribute) of a module whose class says where its rate is, else None."""
    if isinstance(module, DROPOUT_TYPES):
        return "module", "p"
    if isinstance(module, nn.MultiheadAttention):
        return "attention", "dropout"
    if isinstance(module, nn.RNNBase):
        return "recurrent", "dropout"
    if isinstance(module, StochasticDepth):
        return "path", "p"
    if isinstance(vars(module).get("drop_prob"), float):
        return "path", "drop_prob"
    return None


def _is_rate(value: object) -> bool:
    return isinstance(value, float) and 0.0 <= value < 1.0


def _named_rates(module: nn.Module, taken: str | None) -> list[str]:
    """The module's own float attributes named like a dropout rate, but the one its kind reads."""
    return [
        name
        for name, value in vars(module).items()
        if name != taken and DROPOUT_NAME.search(name) and _is_rate(value)
    ]


def walk(model: nn.Module, kinds: Mapping[type, str] | None = None) -> Walk:
    """Every site and candidate of `model` in module order. `kinds`: declared classes and the
    attribute that holds each one's rate (checked to be a float rate on every instance)."""
    kinds = kinds or {}
    sites, candidates, inert = [], [], []
    for path, module in model.named_modules():
        declared = next((attr for cls, attr in kinds.items() if isinstance(module, cls)), None)
        known = None if declared else _known(module)
        taken = declared or (known[1] if known else None)
        if declared is not None:
            value = getattr(module, declared, None)
            if not _is_rate(value):
                raise ValueError(
                    f"{type(module).__name__}.{declared} must be a float rate in [0, 1) on every "
                    f"instance: {path or 'the model'} has {value!r}"
                )
            attr_path = ".".join(filter(None, [path, declared]))
            candidates.append(
                Site(attr_path, "declared", type(module).__name__, value, path, declared)
            )
        elif known is not None:
            kind, attribute = known
            rate = float(getattr(module, attribute))
            site = Site(path, kind, type(module).__name__, rate, path, attribute)
            if kind == "recurrent" and module.num_layers == 1:
                inert.append(Inert(site, "a 1-layer RNN: torch drops only between layers"))
            else:
                sites.append(site)
        for name in _named_rates(module, taken):
            site_path = ".".join(filter(None, [path, name]))
            cls = type(module).__name__
            candidates.append(Site(site_path, "float", cls, vars(module)[name], path, name))
    return Walk(sites, candidates, inert)


def set_rate(model: nn.Module, site: Site, rate: float) -> None:
    setattr(model.get_submodule(site.holder), site.attribute, float(rate))


# torch's transformer layers run a fused kernel in eval mode that skips their attention's dropout
FAST_PATH_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def holders(model: nn.Module, sites: Sequence[Site]) -> list[nn.Module]:
    """The modules whose own `training` flag turns the sites' dropout on (MC dropout): each
    site's holder, and for an attention site in one of torch's transformer layers that layer
    too, whose eval-mode fast path would skip the attention's dropout."""
    found = {}
    for site in sites:
        found[site.holder] = model.get_submodule(site.holder)
        parent = site.holder.rpartition(".")[0]
        if site.kind == "attention" and isinstance(model.get_submodule(parent), FAST_PATH_LAYERS):
            found[parent] = model.get_submodule(parent)
    return list(found.values())


def _outputs(output: object) -> list[torch.Tensor]:
    """The tensors of a forward's output: a tensor, or those in a tuple, list or mapping."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, list | tuple):
        return [t for item in output for t in _outputs(item)]
    return []


@torch.no_grad()
def _forward(model: nn.Module, probe: torch.Tensor) -> list[torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _outputs(model(probe))


class ProbeFailed(Exception):
    """The probe batch's forward raised: a model that takes no float batch of its input shape."""


def prove(
    model: nn.Module, sites: Sequence[Site], input_shape: Sequence[int]
) -> tuple[list[Site], list[Inert]]:
    """Which sites act: in training mode, on a probe batch of standard normal inputs, the
    output at rate 0 and at PROBE_RATE (same seed) must differ. Nothing else can tell a rate
    read in forward from one read only at construction (copied into a closure, or a module
    built as nn.Identity at rate 0), or a dropout module the forward never calls (nanoGPT's
    `attn_dropout` on its flash path). `model` is changed: build one for this."""
    if not sites:
        return [], []
    probe = torch.randn(PROBE_EXAMPLES, *input_shape, generator=torch.Generator().manual_seed(0))
    model.train()
    acting, inert = [], []
    for site in sites:
        try:
            set_rate(model, site, 0.0)
            off = _forward(model, probe)
            set_rate(model, site, PROBE_RATE)
            on = _forward(model, probe)
        except Exception as error:
            reason = f"a probe batch's forward raised {type(error).__name__}: {error}"
            raise ProbeFailed(reason.splitlines()[0]) from error
        set_rate(model, site, site.rate)
        if len(on) == len(off) and all(torch.equal(a, b) for a, b in zip(on, off, strict=True)):
            reason = f"rate 0 and {PROBE_RATE} give the same training-mode output"
            inert.append(Inert(site, reason))
        else:
            acting.append(site)
    return acting, inert


def matching(sites: Sequence[Site], key: str) -> list[Site]:
    """The sites a key selects: a role (as `make sites` lists them) its sites, any other key a
    glob (fnmatch, `*` crossing dots) over their paths."""
    if key in {site.role for site in sites}:
        return [site for site in sites if site.role == key]
    return [site for site in sites if fnmatch.fnmatchcase(site.path, key)]


def unmatched(sites: Sequence[Site], keys: Sequence[str]) -> list[str]:
    return [key for key in keys if not matching(sites, key)]


def set_site_rates(model: nn.Module, rates: Mapping[str, float], sites: Sequence[Site]) -> None:
    """Set each key's rate on the sites it selects; keys apply in order, so a later one wins."""
    missing = unmatched(sites, list(rates))
    if missing:
        paths = [site.path for site in sites]
        raise ValueError(f"dropout glob {missing[0]!r} matches none of the sites {paths}")
    for key, rate in rates.items():
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate {rate!r} for {key!r} must be in [0, 1)")
        for site in matching(sites, key):
            set_rate(model, site, rate)


def _is_channelwise(module: nn.Module) -> bool:
    if isinstance(module, MaskDropout):
        return module.channelwise
    return isinstance(module, CHANNELWISE)


def swap_variant(model: nn.Module, variant: str) -> None:
    """Replace every module site by droptune's `variant` at the same rate (channel-wise sites
    stay channel-wise; a site at rate 0 stays off under `concrete`, whose rate starts above 0).
    Other kinds keep their own dropout: their rate is an argument of code that is not a module."""
    for site in walk(model).sites:
        if site.kind != "module" or (variant == "concrete" and site.rate == 0):
            continue
        parent_path, _, name = site.path.rpartition(".")
        parent = model.get_submodule(parent_path)
        old = getattr(parent, name)
        if variant == "inverted" and isinstance(old, INVERTED):
            new = type(old)(site.rate)  # torch's own: Dropout1d / 3d keep their shape rule
        else:
            new = variant_module(site.rate, variant, _is_channelwise(old))
        setattr(parent, name, new)
