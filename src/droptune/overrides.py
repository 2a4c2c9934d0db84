"""Command-line overrides checked before Hydra runs: a misspelt key gets droptune's one line with
the nearest key ("did you mean"), where Hydra would say "Key 'hiden' is not in struct"."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from droptune.errors import ConfigError, unknown_key

FAILED_KEY = re.compile(r"Could not override '([^']+)'")


def _compose(conf_dir: Path, config_name: str, overrides: Sequence[str]) -> Any:
    with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def misspelt_key(conf_dir: Path, config_name: str, args: Sequence[str]) -> ConfigError | None:
    """The ConfigError of the first override whose key the composed config lacks, or None (any
    other problem is Hydra's to report, as usual)."""
    overrides = [a for a in args if not a.startswith(("-", "hydra", "+", "~"))]
    try:
        _compose(conf_dir, config_name, overrides)
        return None
    except HydraException as error:
        found = FAILED_KEY.search(str(error))
        if found is None:
            return None
        key = found.group(1)
    rest = [o for o in overrides if o.split("=", 1)[0] != key]
    try:
        config = OmegaConf.to_container(_compose(conf_dir, config_name, rest))
    except HydraException:
        return None
    parent, _, leaf = key.rpartition(".")
    node = _node(config, parent)
    if not isinstance(node, Mapping) or leaf in node:  # the key exists: Hydra's own error
        return None
    value = next(o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key)
    return unknown_key(key, value, parent, [str(k) for k in node])


def _node(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in filter(None, path.split(".")):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def exit_if_misspelt(conf_dir: Path, config_name: str, args: Sequence[str]) -> None:
    """An entry point's first line: a misspelt key ends the run (exit 2) with droptune's line."""
    misspelt = misspelt_key(conf_dir, config_name, args)
    if misspelt is not None:
        print(f"ERROR {misspelt}", file=sys.stderr)
        sys.exit(2)
