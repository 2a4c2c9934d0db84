"""A config of conf/ composed from Python, as its `make` target composes it."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def compose_config(config_name: str, overrides: Sequence[str]) -> dict[str, Any]:
    """conf/<config_name>.yaml with `overrides`, resolved (inside a running Hydra app, with its
    config path; outside one, from the package's conf/)."""
    inside = GlobalHydra.instance().is_initialized()
    with nullcontext() if inside else initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(composed, resolve=True)
