"""The JSON Schemas of the MCP tools: inputs from the command line's one option table, outputs from the contract.

An input schema is generated, never written: one property per option the command takes (named by its shortest long
flag without the dashes, ``model`` for MODEL, as the web API's ``args`` and its options listing name them; every
other long flag is accepted too), its JSON type from the option's type, ``enum`` from its choices (argparse's, or
the values the setup checks: ``cli.options.SUGGESTED``), ``default`` from the setup's default, ``description``
from its ``--help`` text. The options a server refuses (``from``, ``emit``, ``json``) are left out. The output
schemas follow docs/json-schema.md's top-level keys (tests/mcpserver/test_tools.py compares them with the
document's tables): a tool answers with exactly the ``--json`` document, and the client validates it against these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from vramwise.app.sent_config import MAX_CONFIG_BYTES
from vramwise.cli.options import FIT, INFER, SUGGESTED, TRAIN, Group, Option, help_text, options_of, tokens

COMMANDS = (INFER, TRAIN, FIT)
POSITIONAL = "model"
CONFIG = "config"  # a config.json's text instead of MODEL (app/sent_config.py)
# what a server never takes from a request (cli/options.py parse_options refuses them too): a file on the server's
# machine (--from), and outputs other than the --json document
LEFT_OUT = ("source", "emit", "json")
# passed on to the parser, whose refusal says why (a file, another output): not listed, not unknown either
REFUSED_BY_PARSER = ("from", "emit", "json", "help")
CONFIG_HELP = (
    "instead of model: the text of a config.json (at most 200 KiB), read as the model's architecture; the server "
    "reads no file a caller names, so a model of your own is sent this way"
)
MODEL_HELP = (
    "a catalog name (list_models), a Hugging Face hub id org/name[@revision], or a size like 14b; never a file path "
    "(the server reads no file a request names)"
)


def _long(option: Option) -> tuple[str, ...]:
    return tuple(f[2:] for f in option.flags if f.startswith("--"))


def key(option: Option) -> str:
    """The name a request gives the option: its shortest long flag without the dashes (``gpu-util`` rather than
    ``gpu-memory-utilization``), as the web API's options listing (web/describe.py flag_of) names it."""
    if option.name == POSITIONAL:
        return POSITIONAL
    return min(_long(option), key=len)


def aliases(option: Option) -> tuple[str, ...]:
    """The option's other long flags, accepted as well (``gpu-memory-utilization``)."""
    return tuple(f for f in _long(option) if f != key(option))


def choices(option: Option) -> tuple[str, ...] | None:
    """What a choice option takes: argparse's choices, or the values its setup checks."""
    return option.choices or SUGGESTED.get(option.name)


def tool_options(command: str) -> tuple[Option, ...]:
    """The options of ``command`` a tool takes: the CLI's, less those a server refuses."""
    return tuple(o for o in options_of(command) if o.name not in LEFT_OUT)


def argument_names(command: str) -> set[str]:
    """Every argument name the command's tool takes: each option's long flags without dashes, model and config."""
    names = {CONFIG}
    for option in tool_options(command):
        names.update((key(option), *aliases(option)))
    return names


def _json_type(option: Option) -> dict[str, Any]:
    if option.type is None:
        return {"type": "boolean"}
    if option.type is int:
        return {"type": "integer"}
    if option.type is float:
        return {"type": "number"}
    if option.type is tokens:  # 8192, or "128k" = 128,000, "128K" = 131,072 (cli/options.py tokens)
        return {"type": ["integer", "string"]}
    return {"type": "string"}


def jsonable(value: Any) -> Any:
    """A default as a request would send it: an enum member as its string, a list option (``lora_targets``) as its
    comma-separated text (none: absent); None when it has no JSON form."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return ",".join(str(jsonable(v)) for v in value) or None
    return None


def setup_default(command: str, name: str) -> Any:
    """The setup's default of a setup option (InferSetup's for infer, TrainSetup's for train; fit: train's where
    both have it, as fit asks about training unless --infer), or None."""
    from vramwise.app.setups import infer_default, train_default

    readers = (infer_default,) if command == INFER else (train_default, infer_default)
    for read in readers:
        try:
            return jsonable(read(name))
        except KeyError:
            continue
    return None


def default_of(command: str, option: Option) -> Any:
    if option.default is not None:
        return jsonable(option.default)
    if option.group is Group.SETUP:
        return setup_default(command, option.name)
    return None


def _property(command: str, option: Option) -> dict[str, Any]:
    if option.name == POSITIONAL:
        return {"type": "string", "description": MODEL_HELP}
    prop = _json_type(option)
    allowed = choices(option)
    if allowed and option.type is str:
        prop["enum"] = list(allowed)
    default = default_of(command, option)
    if default is not None and option.type is not None:  # a switch's default is false: absent
        prop["default"] = default
    words = " ".join(help_text(option, command).split())
    others = aliases(option)
    if others:
        words += " (also named " + ", ".join(others) + ")"
    prop["description"] = words
    return prop


def required(command: str) -> list[str]:
    """What the command cannot do without besides the model (``model`` or ``config``, one of them: a rule of two
    arguments, in the description): fit's ``gpu``."""
    return [key(o) for o in tool_options(command) if command in o.required_in and o.name != POSITIONAL]


def input_schema(command: str) -> dict[str, Any]:
    """The JSON Schema of a tool's arguments: the command's options by flag name, and ``config``. No ``oneOf`` at
    the top (several clients refuse one there): the rules of several arguments are in the description, and the
    parser enforces them."""
    options = tool_options(command)
    properties = {key(o): _property(command, o) for o in options}
    # a text of n characters has at least n UTF-8 bytes: maxLength in characters is the byte cap's necessary side
    properties[CONFIG] = {"type": "string", "maxLength": MAX_CONFIG_BYTES, "description": CONFIG_HELP}
    rules = ["give model or config (one of them)"]
    exclusive = [key(o) for o in options if o.exclusive]
    if exclusive:
        rules.append("give exactly one of: " + ", ".join(exclusive))
    return {
        "type": "object",
        "description": "; ".join(rules),
        "properties": properties,
        "required": required(command),
        "additionalProperties": False,
    }


def option_rows(command: str) -> list[dict[str, Any]]:
    """The option table of ``command`` as data, row for row the web API's ``/api/v1/options`` (web/describe.py; a
    test holds them equal): flag, flags, dest, group, type, tokens, choices, default, help, required, exclusive."""
    from vramwise.app.setups import INFER_FIELDS, TRAIN_FIELDS, infer_default

    rows = []
    for o in tool_options(command):
        allowed = choices(o)
        row = {
            "flag": key(o),
            "flags": [POSITIONAL] if o.name == POSITIONAL else list(_long(o)),
            "dest": o.name,
            "group": o.group.value,
            "type": "str" if o.name == POSITIONAL else "bool" if o.type is None  # MODEL: a name, never a flag
            else {int: "int", float: "float", tokens: "int"}.get(o.type, "str"),
            "tokens": o.type is tokens,  # an int that may also be written 128k (10^3) or 128K (2^10)
            "choices": list(allowed) if allowed else None,
            "default": default_of(command, o),
            "help": help_text(o, command),
            "required": o.name == POSITIONAL or key(o) in required(command),
            "exclusive": o.exclusive,
        }
        if command == FIT and o.name in INFER_FIELDS and o.name in TRAIN_FIELDS:
            row["default_infer"] = jsonable(infer_default(o.name))  # fit --infer's default
        rows.append(row)
    return rows


# --- outputs ---------------------------------------------------------------------------------------------------

_STR, _INT, _NUM, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_LIST, _OBJ = {"type": "array"}, {"type": "object"}


def _nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}


def _described(schema: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {**schema, "description": text}


def _object(properties: Mapping[str, Any], required_keys: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": required_keys}


_TERM = _object({"name": _STR, "bytes": _INT, "formula": _STR, "source": _STR, "phase": _STR},
                ["name", "bytes", "formula", "source"])
_ADVICE = _described(
    {"type": "array", "items": _object({"kind": _STR, "change": _STR, "gpus": _INT}, ["kind", "change"])},
    "the single changes that each make it fit, cheapest first (present when it does not fit)",
)

# only with --from (the web API and MCP refuse a file, so their documents never carry it; listed to match the contract)
_FROM = _described(_object({"source": _STR, "notes": {"type": "array", "items": _STR}}, ["source", "notes"]),
                   "with --from: the file and the importer's notes")
# schema vramwise/estimate v1 (docs/json-schema.md, first table)
ESTIMATE = _object(
    {
        "schema": {"const": "vramwise/estimate"},
        "version": {"const": 1},
        "kind": _described({"enum": ["inference", "training"]}, "what was estimated"),
        "mode": _described({"enum": ["accurate", "textbook"]}, "framework allocations, or the seeds' formulas"),
        "model": _described(_object({"name": _STR, "source": _STR, "params": _INT}, ["name"]),
                            "the model: name, source, model_type, params, active_params (checkpoint when read)"),
        "setup": _described(_OBJ, "every workload field as given (schema v1's flat names)"),
        "terms": _described({"type": "array", "items": _TERM},
                            "what is live at the peak; they add up to peak.bytes"),
        "peak": _described(_object({"bytes": _INT, "phase": _nullable(_STR)}, ["bytes", "phase"]),
                           "the per-GPU peak and the phase where it occurs"),
        "phases": _described({"type": "array", "items": _object({"name": _STR, "bytes": _INT}, ["name", "bytes"])},
                             "the per-GPU total at each phase"),
        "host": _described({"type": "array", "items": _TERM}, "host RAM per GPU process (not part of peak)"),
        "missing": _described({"type": "array", "items": _STR}, "terms that could not be computed, and why"),
        "notes": _described({"type": "array", "items": _STR}, "assumptions that shaped the numbers"),
        "gpu": _described(_nullable(_object({"name": _STR, "memory_bytes": _INT, "fits": _BOOL,
                                             "headroom_bytes": _INT}, ["name", "memory_bytes", "fits"])),
                          "with a GPU: its budget, whether the peak fits and the headroom"),
        "capacity": _described(_nullable(_OBJ), "a serving engine's KV pool: tokens and sequences it holds"),
        "engine": _described(_object({"name": _STR, "version": _STR}, ["name"]),
                             "the serving engine's plan (only with an engine)"),
        "advice": _ADVICE,
        "from": _FROM,
        "range": _described(_OBJ, "with --range: low, estimate, high, bound and each uncertainty's values"),
    },
    ["schema", "version", "kind", "mode", "model", "setup", "terms", "peak", "phases", "host", "missing", "notes",
     "gpu", "capacity"],
)
# train --per-stage: one estimate per pipeline stage
STAGES = _object({"stages": {"type": "array", "items": {"$ref": "#/$defs/estimate"}}, "advice": _ADVICE},
                 ["stages"])
# schema vramwise/fit v1 (docs/json-schema.md, "vramwise fit --json")
FIT_DOCUMENT = _object(
    {
        "schema": {"const": "vramwise/fit"},
        "version": {"const": 1},
        "question": _described(_STR, "max batch, max seq, max context, min_gpus, best_format or layouts"),
        "model": _described(_STR, "the MODEL as given"),
        "gpu": _described(_object({"name": _STR, "memory_bytes": _INT, "count": _INT, "budget_bytes": _INT},
                                  ["name", "memory_bytes", "count"]),
                          "the GPU whose memory is the budget, with the count and the margin"),
        "fits": _described(_BOOL, "false when nothing fits"),
        "reason": _described(_nullable(_STR), "why nothing fits"),
        "assumptions": _described({"type": "array", "items": _STR}, "the setup the answer holds for"),
        "notes": _described({"type": "array", "items": _STR}, "what --gpu changed, the preset's notes"),
        "answer": _described(_nullable(_object({"value": {"type": ["integer", "string"]}, "peak_bytes": _INT},
                                               ["value"])),
                             "max, min_gpus, best_format: the answer, its peak and headroom"),
        "formats": _described({"type": "array", "items": _OBJ}, "best_format: every format tried"),
        "layouts": _described(_OBJ, "layouts: the fitting ones ranked, the rejected, the counts"),
        "advice": _described({"type": "array", "items": _OBJ}, "when nothing fits, or with min_gpus"),
        "from": _FROM,
        "range": _described(_OBJ, "with --max ... --range: the range of the setup at the answer"),
    },
    ["schema", "version", "question", "model", "gpu", "fits", "reason", "assumptions", "notes", "answer"],
)


def output_schema(command: str) -> dict[str, Any]:
    """The JSON Schema of infer's, train's or fit's answer: the command's ``--json`` document."""
    if command == FIT:
        return FIT_DOCUMENT
    if command == TRAIN:  # one document, or {"stages": [...]} with per-stage
        return {"type": "object", "anyOf": [{"$ref": "#/$defs/estimate"}, STAGES], "$defs": {"estimate": ESTIMATE}}
    return ESTIMATE


_ROWS = {"type": "array", "items": _OBJ}
MODELS = _object({"models": _described(
    {"type": "array", "items": _object({"name": _STR, "model_type": _STR, "params": _INT, "active_params": _INT,
                                        "hf_id": _STR}, ["name", "params"])},
    "`vramwise models --json`'s rows whose name or hub id contains the query")}, ["models"])
GPUS = _object({"gpus": _described(
    {"type": "array", "items": _object({"name": _STR, "label": _STR, "memory_bytes": _INT, "aliases": _LIST},
                                       ["name", "memory_bytes"])},
    "`vramwise gpus --json`: memory_bytes is the budget --gpu checks (the CUDA-visible total)")}, ["gpus"])
OPTIONS = _object({"command": {"enum": list(COMMANDS)}, "options": _described(
    _ROWS, "flag (the argument's name), flags (every name taken), dest, group, type, tokens, choices, default, help, "
           "required, exclusive")},
    ["command", "options"])
QUERY = {"type": "object", "properties": {"query": {"type": "string", "description": (
    "a part of the name or hub id (case-insensitive); empty or absent: every model")}},
    "additionalProperties": False}
NOTHING: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
COMMAND = {"type": "object", "properties": {"command": {"enum": list(COMMANDS), "description": (
    "whose options: infer, train or fit")}}, "required": ["command"], "additionalProperties": False}
