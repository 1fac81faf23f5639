"""Units live here and only here: bytes internally, GiB (2^30) shown by default, GB (10^9) on request."""

from __future__ import annotations

from typing import Literal

Unit = Literal["gib", "gb"]

GIB = 2**30
MIB = 2**20
GB = 10**9

_DIVISOR: dict[str, int] = {"gib": GIB, "gb": GB}
_LABEL: dict[str, str] = {"gib": "GiB", "gb": "GB"}
_DEFINITION: dict[str, str] = {"gib": "2^30", "gb": "10^9"}
UNITS: tuple[Unit, ...] = ("gib", "gb")
DEFAULT_UNIT: Unit = "gib"  # what every table shows unless --units says otherwise


def unit_label(unit: Unit) -> str:
    """Header label for a unit, e.g. ``GiB``."""
    return _LABEL[unit]


def to_unit(n_bytes: float, unit: Unit) -> float:
    """Bytes expressed in ``unit`` (GiB = 2^30 bytes, GB = 10^9 bytes)."""
    return n_bytes / _DIVISOR[unit]


def fmt(n_bytes: float, unit: Unit = "gib", digits: int = 2) -> str:
    """``n_bytes`` as a number with its unit label, e.g. ``12.55 GiB``."""
    return f"{to_unit(n_bytes, unit):,.{digits}f} {_LABEL[unit]}"


def footer(unit: Unit) -> str:
    """The line under every table that says what its unit means, e.g. ``(units: 1 GiB = 2^30 bytes)``."""
    return f"(units: 1 {_LABEL[unit]} = {_DEFINITION[unit]} bytes)"
