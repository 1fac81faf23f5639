"""Typed reads of a config's keys, each remembered as used; what is left is ignored (harmless) or refused.

Every refusal is one ``ConfigError`` naming the file's key (``field``) and what it may be (``allowed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vramwise.errors import ConfigError, shown


def refuse(kind: str, key: str, message: str, allowed: str | None = None) -> ConfigError:
    """One line: ``deepspeed key zero_optimization.stage: must be 0, 1, 2 or 3, got 4``."""
    tail = f"; allowed: {allowed}" if allowed else ""
    return ConfigError(f"{kind} key {key}: {message}{tail}", field=key, allowed=allowed)


def flatten(data: Mapping[str, Any], prefix: str = "", keep: Iterable[str] = ()) -> dict[str, Any]:
    """Nested mappings as dotted keys (``zero_optimization.stage``); the keys in ``keep`` stay whole."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in keep:
            out |= flatten(value, name + ".", keep)
        else:
            out[name] = value
    return out


class Keys:
    """The keys of one config, read by type; ``finish`` sorts the rest into ignored or refused."""

    def __init__(self, kind: str, data: Mapping[str, Any]) -> None:
        self.kind = kind
        self.data = dict(data)
        self.used: list[str] = []
        self._seen: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        value = self.data.get(key)
        if value is not None and key not in self.used:
            self.used.append(key)
        return value

    def seen(self, *keys: str) -> None:
        """Keys read by the importer's own logic (not through a typed getter)."""
        for key in keys:
            self._seen.add(key)
            if self.has(key) and key not in self.used:
                self.used.append(key)

    def integer(self, key: str, low: int = 0) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)  # a command line's and YAML's "8"
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # DeepSpeed's 5e8
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise refuse(self.kind, key, f"must be an integer >= {low}, got {shown(value)}")
        return value

    def number(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise refuse(self.kind, key, f"must be a number, got {shown(value)}") from None

    def flag(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None or isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise refuse(self.kind, key, f"must be true or false, got {shown(value)}", "true, false")

    def text(self, key: str) -> str | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise refuse(self.kind, key, f"must be text, got {shown(value)}")
        return value

    def choice(self, key: str, table: Mapping[str, Any]) -> Any:
        """The value ``table`` maps the key's text to, or one line listing the texts it knows."""
        text = self.text(key)
        if text is None:
            return None
        if text not in table:
            allowed = ", ".join(table)
            raise refuse(self.kind, key, f"{shown(text)} is not one vramwise models", allowed)
        return table[text]

    def finish(
        self,
        harmless: Callable[[str], bool],
        *,
        refused: Mapping[str, str] | None = None,
        off: Mapping[str, tuple[Any, ...]] | None = None,
    ) -> tuple[str, ...]:
        """The keys not read: those ``harmless`` accepts are returned (ignored); a key in ``refused`` is refused
        with its reason unless it is off (false, empty, or one of its ``off`` values), and any other key is refused
        as unknown (a typo would otherwise change nothing)."""
        ignored = []
        for key, value in self.data.items():
            if key in self._seen:
                continue
            reason = (refused or {}).get(key)
            is_off = value in (None, False, "", [], {}) or value in (off or {}).get(key, ())
            if reason is not None and not is_off:
                raise refuse(self.kind, key, reason)
            if reason is not None or harmless(key):
                ignored.append(key)
                continue
            raise refuse(self.kind, key, "unknown key (vramwise cannot tell whether it changes the memory)")
        return tuple(ignored)


def prefixed(*prefixes: str, names: Iterable[str] = ()) -> Callable[[str], bool]:
    """A ``harmless`` test: the key is one of ``names`` or starts with one of ``prefixes``."""
    exact = frozenset(names)
    return lambda key: key in exact or key.startswith(prefixes)
