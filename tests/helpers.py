"""What the tests share: the repo's paths, the canonical datasets, and composing a config."""

from __future__ import annotations

import os
import subprocess
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


def chromium(url: str, screenshot: Path) -> str:
    """The page's DOM after its scripts ran, in a real headless Chromium, and a screenshot of it."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = subprocess.run(
        ["chromium", *flags, "--window-size=1280,1800", f"--screenshot={screenshot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout
