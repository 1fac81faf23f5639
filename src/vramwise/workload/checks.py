"""Validators shared by the setups: each error names the field, the value and what is allowed."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from vramwise.errors import InvalidWorkloadError

E = TypeVar("E", bound=StrEnum)


def positive(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidWorkloadError(f"{field} must be a positive integer, got {value!r}")


def non_negative(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidWorkloadError(f"{field} must be a non-negative integer, got {value!r}")


def choice(field: str, value: str, allowed: type[E]) -> E:
    """The member of ``allowed`` that ``value`` names (a plain string from the CLI or JSON is accepted)."""
    if isinstance(value, allowed):
        return value  # already checked: replace() on a setup re-runs the checks on unchanged fields
    try:
        return allowed(value)
    except ValueError:
        raise InvalidWorkloadError(f"{field} '{value}' is not allowed; allowed: {', '.join(allowed)}") from None


def coerce(obj: object, field: str, allowed: type[StrEnum], name: str | None = None) -> None:
    """Validate ``obj.field`` against ``allowed`` and store the enum member (frozen dataclasses only)."""
    object.__setattr__(obj, field, choice(name or field, getattr(obj, field), allowed))
