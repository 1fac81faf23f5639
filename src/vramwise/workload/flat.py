"""The bridge between a grouped setup and schema v1's flat names (``dp``, ``cuda_context_mib``).

The CLI, the JSON report and the benches speak flat names; the setups group their fields by concern. Each
setup declares one ``FlatNames`` (flat name -> group and attribute, in schema v1's order), and this module
builds, flattens and copies through it, so both setups read and write the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class FlatNames:
    """Schema v1's flat names of one setup class, in the schema's order."""

    owner: str  # the setup's class name, for the error on an unknown name
    names: dict[str, tuple[str, str]]  # flat name -> (group, attribute); group '' = a field of the setup itself
    groups: dict[str, type]  # group -> its dataclass

    def split(self, flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Flat names sorted into (the setup's own fields, {group: its fields})."""
        top: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            where = self.names.get(name)
            if where is None:
                raise TypeError(f"{self.owner} has no field {name!r}; fields: {', '.join(self.names)}")
            group, attr = where
            if group:
                groups.setdefault(group, {})[attr] = value
            else:
                top[attr] = value
        return top, groups

    def build(self, flat: dict[str, Any]) -> dict[str, Any]:
        """The setup's constructor keywords: its own fields, and each group given a flat name built whole."""
        top, groups = self.split(flat)
        return {**top, **{group: self.groups[group](**kw) for group, kw in groups.items()}}

    def flatten(self, setup: object) -> dict[str, Any]:
        """Schema v1's ``setup`` object: every flat name in order, enums as their plain strings."""
        out: dict[str, Any] = {}
        for name, (group, attr) in self.names.items():
            value = getattr(getattr(setup, group), attr) if group else getattr(setup, attr)
            out[name] = str(value) if isinstance(value, str) else value  # a StrEnum becomes its str
        return out

    def changes(self, setup: object, flat: dict[str, Any]) -> dict[str, Any]:
        """``dataclasses.replace`` keywords for a copy of ``setup`` with some flat fields changed; the groups
        it does not touch are shared, not rebuilt."""
        top, groups = self.split(flat)
        for group, kw in groups.items():
            top[group] = dataclasses.replace(getattr(setup, group), **kw)
        return top
