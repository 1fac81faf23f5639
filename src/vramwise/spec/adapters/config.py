"""Typed, validated access to the raw keys of a config.json: the only place raw keys are read."""

from __future__ import annotations

from typing import Any

from vramwise.errors import ConfigError

_MISSING = object()


class RawConfig:
    """A config dict whose reads name the offending field when a value is missing or invalid."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise ConfigError(f"{self.source}: field '{key}' is missing (required for this architecture)")
            return default
        return value

    def pos_int(self, key: str, default: Any = _MISSING) -> int:
        """A required positive integer (or ``default`` when the key is absent or null)."""
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{self.source}: field '{key}' must be a positive integer, got {value!r}")
        return value

    def optional_int(self, key: str, absent: int | None) -> int | None:
        """A positive integer that may be explicitly null (None); ``absent`` when the key is not there."""
        if key not in self.data:
            return absent
        if self.data[key] is None:
            return None
        return self.pos_int(key)

    def nonneg_int(self, key: str, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{self.source}: field '{key}' must be a non-negative integer, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.source}: field '{key}' must be true or false, got {value!r}")
        return value

    def probability(self, key: str, default: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(f"{self.source}: field '{key}' must be a probability in [0, 1), got {value!r}")
        return float(value)

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self.source}: field '{key}' must be a string, got {value!r}")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{self.source}: field '{key}' must be a list of integers, got {value!r}")
        return value

    def divides(self, key: str, total: int, total_key: str) -> int:
        """``total / config[key]``, requiring exact division (e.g. head_dim = hidden / heads)."""
        parts = self.pos_int(key)
        if total % parts:
            raise ConfigError(f"{self.source}: '{total_key}' ({total}) is not divisible by '{key}' ({parts})")
        return total // parts
