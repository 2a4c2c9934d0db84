"""pydantic's complaints in droptune's words: one ConfigError naming key, value and what is
allowed, with "did you mean" for a key a group does not have."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from droptune.config.types import DATA_NAMES, FAMILIES, VARIANT_KEYS
from droptune.errors import ConfigError, unknown_key
from droptune.lit import OPTIMIZERS


def _untagged(loc: Sequence[str | int], prefix: str) -> list[str | int]:
    """An error's location without the variant's tag (`mlp` in model.mlp.dropout.hidden)."""
    loc = list(loc)
    if not prefix and len(loc) > 1 and loc[0] in VARIANT_KEYS:
        del loc[1]
    return loc


def _key(loc: Sequence[str | int], prefix: str) -> str:
    return ".".join(filter(None, [prefix, *map(str, loc)]))


def _node(config: Any, loc: Sequence[str | int]) -> Any:
    for part in loc:
        config = config[part] if isinstance(config, Mapping | list) else None
    return config


def config_error(error: ValidationError, given: Any, prefix: str = "") -> ConfigError:
    """The first problem pydantic found, in droptune's words: key, value, what is allowed."""
    first = error.errors()[0]
    kind, ctx = first["type"], first.get("ctx") or {}
    loc = _untagged(first["loc"], prefix)
    key = _key(loc, prefix)
    if isinstance(ctx.get("error"), ConfigError):  # a check across keys, raised by a validator
        inner = ctx["error"]
        # a group's validator names keys from the top (model.depth); a search-space entry's,
        # which cannot know where it sits, names its own keys (low)
        absolute = not key or inner.key.split(".")[0].split("[")[0] == key.split(".")[0]
        return inner if absolute else ConfigError(f"{key}.{inner.key}", inner.value, inner.allowed)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        variant_key = VARIANT_KEYS[key]
        choices = {"data": DATA_NAMES, "model": FAMILIES, "optim": OPTIMIZERS}[key]
        value = (_node(given, loc) or {}).get(variant_key)
        return ConfigError(f"{key}.{variant_key}", value, f"one of {', '.join(choices)}")
    if kind == "droptune":
        return ConfigError(key + ctx["at"], ctx["value"], ctx["allowed"])
    if kind == "extra_forbidden":
        parent_loc = loc[:-1]
        parent = _key(parent_loc, prefix)
        node = _node(given, parent_loc)
        known = [k for k in node if k != loc[-1]] if isinstance(node, Mapping) else []
        return unknown_key(key, first["input"], parent, known)
    if kind == "missing":
        return ConfigError(key, None, "a value (the key is required)")
    return ConfigError(key, first["input"], first["msg"])
