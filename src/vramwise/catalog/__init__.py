"""Built-in catalogs: models by short name and GPUs by name, stored as small TOML data files."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from vramwise.errors import UnknownGpuError
from vramwise.units import MIB


@dataclass(frozen=True, kw_only=True)
class CatalogModel:
    """A catalog entry: the short name, where it was published, and its config keys as a dict."""

    name: str
    hf_id: str
    config: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Gpu:
    name: str
    label: str
    memory_bytes: int
    confirmed: bool = True


def _load(filename: str) -> dict[str, Any]:
    return tomllib.loads(resources.files(__package__).joinpath(filename).read_text(encoding="utf-8"))


@cache
def models() -> dict[str, CatalogModel]:
    """Every catalog model by short name, in file order."""
    out = {}
    for name, entry in _load("models.toml").items():
        config = dict(entry["config"])
        config.update(dict.fromkeys(entry.get("nulls", [])))  # explicit nulls, which TOML cannot write
        method = config.pop("quant_method", None)
        if method:
            config["quantization_config"] = {"quant_method": method}
        out[name] = CatalogModel(name=name, hf_id=entry["hf_id"], config=config)
    return out


@cache
def gpus() -> dict[str, Gpu]:
    return {
        name: Gpu(name=name, label=e["label"], memory_bytes=e["memory_mib"] * MIB, confirmed=e.get("confirmed", True))
        for name, e in _load("gpus.toml").items()
    }


def close_matches(word: str, names: list[str]) -> str:
    """' (did you mean: a, b?)' for a misspelt name, or ''."""
    near = difflib.get_close_matches(word.lower(), names, n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(near)}?)" if near else ""


def get_gpu(name: str) -> Gpu:
    key = name.lower()
    table = gpus()
    if key in table:
        return table[key]
    raise UnknownGpuError(f"unknown GPU '{name}'{close_matches(key, list(table))}; allowed: {', '.join(table)}")
