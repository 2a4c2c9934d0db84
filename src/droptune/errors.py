"""Errors a user can act on: each names the config key, the value given and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A config value is not allowed. Raised before any training starts."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


def unknown_key(key: str, value: Any, parent: str, known: Sequence[str]) -> ConfigError:
    """A key its group does not have, with the group's keys and the nearest one."""
    close = difflib.get_close_matches(key.rpartition(".")[2], list(known), n=1)
    where = f"a key of {parent}" if parent else "a top-level key"
    hint = f"did you mean {'.'.join(filter(None, [parent, close[0]]))}?" if close else ""
    listed = f"({', '.join(sorted(known))})"
    return ConfigError(key, value, "; ".join(filter(None, [f"{where} {listed}", hint])))
