"""A config in a few words: run names a person can scan in the MLflow runs table, where the full
config is a click away (params, config.yaml)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from droptune.config.types import OWN_FAMILIES

MAX_SITES_SHOWN = 4


def short(value: float) -> str:
    """0.4321 -> 0.43, 0.00123 -> 0.0012, 512 -> 512: two significant digits."""
    return f"{value:.2g}"


def rates(value: float | Sequence[float]) -> str:
    """One rate, or one per layer joined by '/'."""
    return "/".join(short(r) for r in value) if isinstance(value, Sequence) else short(value)


def config_label(config: Mapping[str, Any], sites: Mapping[str, str]) -> str:
    """'hidden 0.43 after · input 0.12 · 512x256 · lr 0.013': dropout where it is and how much,
    the width, the learning rate and max-norm; a user's model by its sites' rates (`sites`:
    build.site_params, values '0.3 Dropout')."""
    model = config["model"]
    parts = _own_model(model) if model["family"] in OWN_FAMILIES else _sites(sites)
    parts.append(f"lr {short(config['optim']['lr'])}")
    if model.get("max_norm") is not None:
        parts.append(f"c {short(model['max_norm'])}")
    return " · ".join(parts)


def _own_model(model: Mapping[str, Any]) -> list[str]:
    dropout = model["dropout"]
    parts = [f"hidden {rates(dropout['hidden'])} {dropout['placement']}"]
    if model["family"] == "cnn":
        parts.append(f"conv {rates(dropout['conv'])}")
    if dropout["input"]:
        parts.append(f"input {short(dropout['input'])}")
    if dropout["variant"] != "inverted":
        parts.append(dropout["variant"])
    if model["family"] == "mlp":
        widths = model["widths"] or [model["width"]] * model["depth"]
    else:
        widths = [*model["channels"], *model["head_widths"]]
    parts.append("x".join(str(w) for w in widths))
    return parts


def _sites(sites: Mapping[str, str]) -> list[str]:
    found = [float(value.split()[0]) for value in sites.values()]
    if not found:
        return []
    shown = "/".join(short(r) for r in found[:MAX_SITES_SHOWN])
    return [f"sites {shown}{'/…' if len(found) > MAX_SITES_SHOWN else ''}"]
