"""Errors a user can act on: each names the config key, the value given and what is allowed."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value is not allowed. Raised before any training starts."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
