"""Resolve what the user typed as MODEL: a catalog name, a path to a config.json, or a bare size."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vramwise.catalog import close_matches, models
from vramwise.errors import ConfigError, UnknownModelError
from vramwise.spec.adapters import language_config, spec_from_config
from vramwise.spec.model import ModelSpec


@dataclass(frozen=True, kw_only=True)
class BareModel:
    """Only a parameter count (``14b``, ``7.5e9``): enough for the seeds' parameter-only formulas."""

    name: str
    params: int


Model = ModelSpec | BareModel


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """What MODEL named, with the config keys its spec was parsed from, read once.

    The twin (verify) builds the real transformers model from ``raw_config``: the very keys the adapter read,
    with ``text_config`` unwrapped by the same rule (``language_config``), so the two cannot disagree."""

    spec: Model
    raw_config: Mapping[str, Any] | None  # None for a bare size: there is no architecture behind it


_SIZE = re.compile(r"^(\d+(?:\.\d+)?(?:e\d+)?)([kmbt]?)$", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_size(text: str) -> int | None:
    """``14b`` -> 14e9, ``7.5e9`` -> 7.5e9, ``350m`` -> 3.5e8; None when ``text`` is not a size."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    value = float(m.group(1)) * _SCALE[m.group(2).lower()]
    return round(value) if value >= 1 else None


def _parsed(data: Any, *, name: str, source: str) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The spec, and the keys it was built from: the language model's, unwrapped by the adapters' one rule."""
    spec = spec_from_config(data, name=name, source=source)
    return spec, MappingProxyType(language_config(data))


def _config_file(path: Path) -> tuple[ModelSpec, Mapping[str, Any]]:
    """A config.json (or a directory holding one), parsed as data: never runs code from the model repo."""
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    return _parsed(data, name=path.parent.name if path.name == "config.json" else path.stem, source=str(path))


def _catalog(name: str) -> tuple[ModelSpec, Mapping[str, Any]]:
    entry = models()[name]
    return _parsed(dict(entry.config), name=name, source=f"catalog:{name} ({entry.hf_id})")


def catalog_spec(name: str) -> ModelSpec:
    return _catalog(name)[0]


def resolve_model_with_config(text: str) -> ResolvedModel:
    """Catalog name first, then a file path, then a bare size; otherwise a clear error."""
    key = text.strip().lower()
    if key in models():
        spec, config = _catalog(key)
        return ResolvedModel(spec=spec, raw_config=config)
    path = Path(text).expanduser()
    if path.suffix == ".json" or path.exists() or "/" in text:
        if not path.exists():
            raise ConfigError(f"{text}: config file not found")
        spec, config = _config_file(path)
        return ResolvedModel(spec=spec, raw_config=config)
    size = parse_size(key)
    if size is not None:
        return ResolvedModel(spec=BareModel(name=text.strip(), params=size), raw_config=None)
    raise UnknownModelError(
        f"unknown model '{text}'{close_matches(key, list(models()))}; give a catalog name "
        "(`vramwise models`), a path to a config.json, or a size such as 14b or 7.5e9"
    )


def resolve_model(text: str) -> Model:
    """What MODEL names: a ModelSpec, or a BareModel for a size (see ``resolve_model_with_config``)."""
    return resolve_model_with_config(text).spec
