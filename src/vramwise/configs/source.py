"""A config file read safely and parsed by its kind (JSON, YAML, TOML, a Modelfile), or a pasted command line."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

from vramwise.errors import ConfigError, shown
from vramwise.files import Bounded, read_regular, stat_or_refuse

_KIND = Bounded(
    limit=1 << 20,
    limit_text="1 MiB",
    over_text="1 MiB",
    typical="a training or serving config is a few KB",
    cannot="cannot read it",
    not_regular="not a regular file",
)


def read_text(path: Path) -> str:
    """The file's text (UTF-8, at most 1 MiB), or one line naming it."""

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"--from {shown(str(path), quote=False)}: {why}", field="from")

    data = read_regular(path, stat_or_refuse(path, _KIND, refuse), _KIND, refuse)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None


def parse(path: Path, text: str) -> dict[str, Any]:
    """A JSON, YAML or TOML file's top-level mapping, by the file's suffix."""
    suffix = path.suffix.lower()
    where = shown(str(path), quote=False)
    try:
        if suffix == ".json":
            data: Any = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped]  # PyYAML, imported only when a YAML file is given

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(
                f"--from {where}: not a .json, .yaml, .yml or .toml file, a Modelfile or a command line",
                field="from",
                allowed=".json, .yaml, .yml, .toml, Modelfile, a command line",
            )
    except ConfigError:
        raise
    except Exception as err:  # the parsers' own errors (JSONDecodeError, YAMLError, TOMLDecodeError)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"--from {where}: cannot parse it ({first})", field="from") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"--from {where}: the top level must be a mapping of keys, got {type(data).__name__}", field="from"
        )
    return data


def split_command(text: str) -> list[str]:
    """A pasted command line as its words: backslash-newline continuations joined, quotes as the shell reads them."""
    try:
        return shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError as err:
        raise ConfigError(f"--from: cannot split the command line ({err})", field="from") from None
