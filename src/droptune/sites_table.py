"""What `make sites` prints: a config's model walked for its dropout sites, without training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from droptune.build import model_sites
from droptune.config import validate
from droptune.inputs import load_data


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  "
        + "  ".join(f"{cell:{width}}" for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def sites_table(cfg: Mapping[str, Any]) -> str:
    """Each site's path, kind, where its rate lives, its rate (with the config's keys applied)
    and its role; the rates that are no site and why; then the layers max-norm constrains."""
    cfg = validate(cfg)
    data = load_data(cfg)
    found = model_sites(cfg["model"], data.input_shape, len(data.classes))
    model = cfg["model"]
    roles = list(dict.fromkeys(site.role for site in found.sites))
    lines = [
        f"{model['_target_']} on {cfg['data']['name']} "
        f"(input {tuple(data.input_shape)}, {len(data.classes)} classes): "
        f"{len(found.sites)} dropout site(s) in {len(roles)} role(s)",
        *_table(
            ("path", "kind", "source", "rate", "role"),
            [(s.path, s.kind, s.source, f"{s.rate:g}", s.role) for s in found.sites],
        ),
    ]
    if found.inert:
        lines.append(f"{len(found.inert)} rate(s) that are no site (not searched):")
        lines += _table(
            ("path", "source", "rate", "why"),
            [(i.site.path, i.site.source, f"{i.site.rate:g}", i.reason) for i in found.inert],
        )
    if model["max_norm"] is None:
        lines.append("max-norm: off (model.max_norm=null)")
    else:
        lines.append(f"max-norm c={model['max_norm']:g} after each step on:")
        lines += [f"  {path}" for path in found.max_norm_layers]
    return "\n".join(lines)
