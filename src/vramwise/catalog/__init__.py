"""Built-in catalogs: models by short name and GPUs by name, stored as small TOML data files.

The GPU part (the catalog, and what `--gpu` accepts) lives in ``gpu_spec.py``.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from vramwise.catalog.gpu_spec import Gpu, GpuChoice, get_gpu, gpus, parse_gpu, parse_size

__all__ = [
    "CatalogModel",
    "Gpu",
    "GpuChoice",
    "close_matches",
    "get_gpu",
    "gpus",
    "models",
    "parse_gpu",
    "parse_size",
]


@dataclass(frozen=True, kw_only=True)
class CatalogModel:
    """A catalog entry: the short name, where it was published, and its config keys as a dict."""

    name: str
    hf_id: str
    config: dict[str, Any]


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


def close_matches(word: str, names: list[str]) -> str:
    """' (did you mean: a, b?)' for a misspelt name, or ''."""
    near = difflib.get_close_matches(word.lower(), names, n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(near)}?)" if near else ""
