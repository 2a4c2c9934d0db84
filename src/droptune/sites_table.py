"""What `make sites` prints: a config's model walked for its dropout sites, without training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from droptune.build import model_sites
from droptune.config import validate
from droptune.inputs import load_data


def sites_table(cfg: Mapping[str, Any]) -> str:
    """Each site's path, class and rate (with the config's globs applied), then the layers
    max-norm constrains."""
    cfg = validate(cfg)
    data = load_data(cfg)
    found = model_sites(cfg["model"], data.input_shape, len(data.classes))
    model = cfg["model"]
    width = max([len("path"), *(len(site.path) for site in found.sites)])
    lines = [
        f"{model['_target_']} on {cfg['data']['name']} "
        f"(input {tuple(data.input_shape)}, {len(data.classes)} classes): "
        f"{len(found.sites)} dropout site(s)",
        f"  {'path':{width}}  {'class':20}  rate",
        *(f"  {site.path:{width}}  {site.kind:20}  {site.rate:g}" for site in found.sites),
    ]
    if model["max_norm"] is None:
        lines.append("max-norm: off (model.max_norm=null)")
    else:
        lines.append(f"max-norm c={model['max_norm']:g} after each step on:")
        lines += [f"  {path}" for path in found.max_norm_layers]
    return "\n".join(lines)
