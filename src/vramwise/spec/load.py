"""Resolve what the user typed as MODEL: a catalog name, a path to a config.json, or a bare size."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vramwise.catalog import close_matches, models
from vramwise.errors import ConfigError, UnknownModelError
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.model import ModelSpec


@dataclass(frozen=True, kw_only=True)
class BareModel:
    """Only a parameter count (``14b``, ``7.5e9``): enough for the seeds' parameter-only formulas."""

    name: str
    params: int


Model = ModelSpec | BareModel

_SIZE = re.compile(r"^(\d+(?:\.\d+)?(?:e\d+)?)([kmbt]?)$", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_size(text: str) -> int | None:
    """``14b`` -> 14e9, ``7.5e9`` -> 7.5e9, ``350m`` -> 3.5e8; None when ``text`` is not a size."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    value = float(m.group(1)) * _SCALE[m.group(2).lower()]
    return round(value) if value >= 1 else None


def load_config_file(path: Path) -> ModelSpec:
    """A ModelSpec from a config.json (or a directory holding one). Never runs code from the model repo."""
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
    return spec_from_config(data, name=path.parent.name if path.name == "config.json" else path.stem, source=str(path))


def catalog_spec(name: str) -> ModelSpec:
    entry = models()[name]
    return spec_from_config(dict(entry.config), name=name, source=f"catalog:{name} ({entry.hf_id})")


def resolve_model(text: str) -> Model:
    """Catalog name first, then a file path, then a bare size; otherwise a clear error."""
    key = text.strip().lower()
    if key in models():
        return catalog_spec(key)
    path = Path(text).expanduser()
    if path.suffix == ".json" or path.exists() or "/" in text:
        if not path.exists():
            raise ConfigError(f"{text}: config file not found")
        return load_config_file(path)
    size = parse_size(key)
    if size is not None:
        return BareModel(name=text.strip(), params=size)
    raise UnknownModelError(
        f"unknown model '{text}'{close_matches(key, list(models()))}; give a catalog name "
        "(`vramwise models`), a path to a config.json, or a size such as 14b or 7.5e9"
    )
