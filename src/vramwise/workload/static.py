"""Cache keys: a setup without the fields a sweep varies, hashed once.

Plans (``estimate/plan.py``) hold everything that does not depend on the batch (nor, in training, on the
sequence), so solvers that sweep those evaluate one cached plan. The key is read from the dataclass's own
``fields()``: a field added later joins every key, so a cache can never return a plan built for other values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


class HashedTuple(tuple[Any, ...]):
    """A tuple that hashes its (nested, frozen) items once: plan caches look it up on every estimate."""

    _hash: int

    def __new__(cls, items: Iterable[Any]) -> HashedTuple:
        self = super().__new__(cls, items)
        self._hash = tuple.__hash__(self)
        return self

    def __hash__(self) -> int:
        return self._hash


def static_key(setup: Any, varied: tuple[str, ...]) -> HashedTuple:
    """Every field of the dataclass ``setup`` but those named in ``varied``, in declaration order."""
    return HashedTuple(getattr(setup, f.name) for f in dataclasses.fields(setup) if f.name not in varied)
