"""What the tests share: the repo's paths, the canonical datasets, and composing a config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = Path(os.environ.get("DROPTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))

needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(),
    reason=f"canonical datasets not found at {SHARED_DATA} (set DROPTUNE_SHARED_DATA)",
)


def compose_config(*overrides: str, config_name: str = "train") -> dict:
    """conf/<config_name>.yaml composed with the overrides, resolved to plain values."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)
