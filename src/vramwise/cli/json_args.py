"""Options sent as data, parsed as the command line parses them (``options.parse_options``).

The web API and the MCP server take a JSON object of options named by their long flags; this module turns it into
the argv the command line would have had and parses it with the same argparse parser, so the values, the defaults
and the refusals are the CLI's own. argparse exits on a usage error; here its message (the words the CLI prints
after ``vramwise: error:``, without the ``--help`` hint that a form has no use for) becomes one ``UsageError``
naming the option's ``field``.

A server never reads a file a request names: MODEL may be a catalog name, a bare size or a hub id (validated with
huggingface_hub's own rule), never a path; ``--from`` (a file) and ``--emit``/``--json``/``--help`` (other outputs)
are refused.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from functools import cache
from typing import Any, NoReturn

from vramwise.cli.options import Option, build_parser, options_of, tokens
from vramwise.errors import UsageError, shown

POSITIONAL = "model"
# keys a server refuses, with the reason: each names a file on the server's machine or an output other than the
# --json document
REFUSED = {
    "from": "--from reads a file on the server's machine: send the options themselves (a dropped config.json's text "
    "goes in `config`)",
    "emit": "--emit prints a framework's config, not the --json document a request answers with",
    "json": "the answer is always the --json document: leave json out",
    "help": "the options are listed by GET /api/v1/options (MCP: the tool's input schema)",
}
PATH_REFUSED = "a path cannot be sent to the server: upload the config.json's text as `config`"
MODEL_ALLOWED = "a catalog name (see `vramwise models`), a hub id org/name[@revision], or a size like 14b"
_TYPE_WORDS: dict[Any, str] = {
    int: "an integer", float: "a number", str: "text", tokens: "an integer, or 128k = 128,000, 128K = 131,072",
}


class _Refused(Exception):
    """argparse's usage error, raised instead of exiting."""


class _RaisingParser(argparse.ArgumentParser):
    """The command line's parser, but a usage error raises (a server answers it; it must not exit)."""

    def error(self, message: str) -> NoReturn:
        raise _Refused(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Refused((message or "").strip() or f"exit {status}")


def long_flags(option: Option) -> tuple[str, ...]:
    """The option's long flags without their dashes: the names a request may use (``gpu-util``, ``peft``)."""
    return tuple(f[2:] for f in option.flags if f.startswith("--"))


@cache
def names_of(command: str) -> dict[str, Option]:
    """Every name a request may use for ``command``, to its option (the refused ones left out)."""
    names: dict[str, Option] = {}
    for option in options_of(command):
        keys = (POSITIONAL,) if option.name == POSITIONAL else long_flags(option)
        names.update({k: option for k in keys if k not in REFUSED})
    return names


def parse(command: str, args: Mapping[str, Any], *, model_path: str | None = None) -> dict[str, Any]:
    """See ``options.parse_options``."""
    if command not in ("infer", "train", "fit"):
        raise UsageError(f"unknown command {shown(command)}: infer, train or fit", field="command",
                         allowed="infer, train, fit")
    if not isinstance(args, Mapping):
        raise UsageError("args must be an object of options by flag name", field="args")
    names = names_of(command)
    argv: list[str] = [command]
    model: str | None = None
    for key, value in args.items():
        option = _option(command, key, names)
        if option.name == POSITIONAL:
            model = _model(value, model_path)
        else:
            argv += _argv(option, value)
    if model_path is not None:
        model = model_path
    if model is not None:
        argv += ["--", model]  # after "--": a MODEL that starts with "-" is not read as an option
    try:
        values = vars(_parser(command).parse_args(argv))
    except _Refused as err:
        raise _usage(command, str(err)) from None
    values.pop("command", None)
    from vramwise.app.imports import with_source  # MODEL missing: the command line's own words

    with_source(command, None, values.get(POSITIONAL), {})
    return values


def command_line(command: str, args: Mapping[str, Any], *, model: str | None = None) -> str:
    """The command line of the same request, as a user types it (``vramwise train llama-3-8b --gpu a100-80gb --peft
    lora --json``): what the page shows and the API sends as ``X-Vramwise-Command``. ``model``: what to show for
    MODEL instead of ``args["model"]`` (a dropped config: its file name). Call it on arguments ``parse`` took."""
    import shlex

    words = ["vramwise", command]
    shown_model = model if model is not None else args.get(POSITIONAL)
    if shown_model is not None:
        words.append(str(shown_model))
    for key, value in args.items():
        if key == POSITIONAL or value is None or value is False:
            continue
        flag = f"--{key}"  # the spelling the request used (every long flag is the command line's too)
        words += [flag] if value is True else [flag, repr(value) if isinstance(value, float) else str(value)]
    return shlex.join([*words, "--json"])


@cache
def _parser(command: str) -> argparse.ArgumentParser:
    """The command's parser, built once: building it is most of a request's time (a hundred options, their help
    filled in), and parsing leaves it unchanged, so the threads of a server share it."""
    return build_parser(command, parser_class=_RaisingParser)


def _option(command: str, key: object, names: Mapping[str, Option]) -> Option:
    if not isinstance(key, str):
        raise UsageError(f"option names are text, not {shown(key)}", field=None)
    if key in REFUSED:
        raise UsageError(REFUSED[key], field="source" if key == "from" else key)
    option = names.get(key)
    if option is None:
        from vramwise.catalog import close_matches

        hint = close_matches(key.replace("_", "-")[:80], sorted(names))
        raise UsageError(f"unknown option {shown(key)} for {command}{hint}", field=None)
    return option


def _argv(option: Option, value: Any) -> list[str]:
    """``--flag=value`` (so a value starting with "-" stays a value), ``--flag`` for a switch, nothing for null."""
    flag = next(f for f in option.flags if f.startswith("--"))
    if value is None:
        return []
    if option.type is None:
        if not isinstance(value, bool):
            # "true or false, not 'true'" read as a contradiction: say that the string is the trouble
            what = f"the string {shown(value)}" if isinstance(value, str) else shown(value)
            raise UsageError(f"{flag} is a switch: JSON true or false (no quotes), not {what}", field=option.name,
                             allowed="true or false")
        return [flag] if value else []
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        what = _TYPE_WORDS.get(option.type, "one value")
        raise UsageError(f"{flag} takes {what}, not {shown(value)}", field=option.name, allowed=_allowed(option))
    if isinstance(value, int) and value.bit_length() > 256:  # str() of a huge int is slow, and no option needs one
        raise UsageError(f"{flag}: {shown(value)} is out of range", field=option.name, allowed=_allowed(option))
    return [f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}"]


def _allowed(option: Option) -> str | None:
    if option.choices:
        return ", ".join(option.choices)
    if option.type is None:
        return "true or false"
    return _TYPE_WORDS.get(option.type) if option.type is not str else None


def _model(value: Any, model_path: str | None) -> str | None:
    if value is None:
        return None
    if model_path is not None:
        raise UsageError("give the model once: a name in `model`, or a config.json's text in `config`",
                         field="model", allowed=MODEL_ALLOWED)
    if not isinstance(value, str):
        # a JSON number too: 14 would be a model of 14 parameters (the CLI's bare size), surely not what was meant
        raise UsageError(f"model is a string: a catalog name, a hub id or a size like '14b'; not {shown(value)}",
                         field="model", allowed=MODEL_ALLOWED)
    text = value
    check_remote_model(text)
    return text


def check_remote_model(text: str) -> None:
    """Refuse a MODEL that would make the server read its own disk, by spec/load.py's rule (resolve_model): a GGUF
    (``.gguf``, ``org/name:TAG``) is a local file when one is there, else a hub file; a path is read before a hub
    id; a local file or folder of the name comes after a catalog name and a size. What is left (a catalog name, a
    size, a hub id or hub GGUF that is not a local path, or a name that is nothing) goes to the estimate, which
    answers an unknown name in the command line's words."""
    stripped = text.strip()
    if not stripped:
        return  # resolve_model: "MODEL is empty"
    from vramwise.catalog import models
    from vramwise.spec.gguf_hub import parse_ref
    from vramwise.spec.hub import parse_hub_id
    from vramwise.spec.load import parse_size

    gguf = parse_ref(stripped) if stripped.lower().endswith(".gguf") or ":" in stripped else None
    if stripped.lower().endswith(".gguf") or gguf is not None:
        if gguf is None or _local(stripped) or stripped.startswith(("/", ".", "~", "\\")):
            _refuse_path()
        _valid_hub_id(stripped, gguf.repo)
        return
    hub = parse_hub_id(stripped)
    if hub is not None:
        if _local(stripped):  # resolve_model reads an existing path of that name before the hub
            _refuse_path()
        _valid_hub_id(stripped, hub.repo_id)
        return
    if _explicit_path(stripped):
        _refuse_path()
    if stripped.lower() in models() or parse_size(stripped) is not None:
        return
    if _local(text):
        _refuse_path()


def _explicit_path(text: str) -> bool:
    # spec/load.py _is_explicit_path: a separator, "~", ".", ".." or a .json ending
    return any(s in text for s in {os.sep, os.altsep or "/", "/", "\\"}) or text.startswith(("~", ".")) or (
        text.endswith(".json")
    )


def _local(text: str) -> bool:
    try:
        os.stat(os.path.expanduser(text))
    except (OSError, ValueError):
        return False
    return True


def _refuse_path() -> NoReturn:
    raise UsageError(PATH_REFUSED, field="model", allowed=MODEL_ALLOWED)


def _valid_hub_id(text: str, repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # lazy: only a hub id needs it

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        # its message ends by quoting the id unescaped; the id is quoted once, by shown()
        reason = re.sub(r"[:.]?\s*'[^']*'\.?(\s*Use `repo_type`.*)?$", "", str(err)).strip()
        raise UsageError(f"MODEL {shown(text)} is not a valid hub id: {reason}", field="model",
                         allowed=MODEL_ALLOWED) from None


# argparse's messages name an option by its flags joined with "/" (argparse._get_action_name)
_ARGUMENT = re.compile(r"argument (?P<name>[^:]+): (?P<rest>.*)", re.S)
_REQUIRED = re.compile(r"the following arguments are required: (?P<names>.*)")
_ONE_OF = re.compile(r"one of the arguments (?P<names>.*) is required")


def _usage(command: str, message: str) -> UsageError:
    """argparse's message as one UsageError naming the option (its dest) and what it allows."""
    by_flags = {"/".join(o.flags_in(command)): o for o in options_of(command)}
    by_flag = {f: o for o in options_of(command) for f in o.flags_in(command)}
    option: Option | None = None
    if m := _ARGUMENT.fullmatch(message):
        option = by_flags.get(m.group("name"))
    elif m := _REQUIRED.fullmatch(message):
        option = by_flag.get(m.group("names").split(", ")[0])
    elif m := _ONE_OF.fullmatch(message):
        first = by_flag.get(m.group("names").split()[0])
        exclusive = first.exclusive if first else None
        flags = [f"--{long_flags(o)[0]}" for o in options_of(command) if exclusive and o.exclusive == exclusive]
        return UsageError(message, field=exclusive, allowed=", ".join(flags) or None)
    line = " ".join(message.split())  # one line, whatever argparse wrapped
    if option is None:
        return UsageError(line)
    return UsageError(line, field=option.name, allowed=_allowed(option))
