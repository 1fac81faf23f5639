"""The API described from the one option table (``cli/options.py``): the options listing a form is built from
(``GET /api/v1/options``) and the OpenAPI 3.1 description (``GET /api/v1/openapi.json``).

Nothing here is written twice: a new row in the table is a new field of the form, a new property of the request
schema and a new name ``parse_options`` takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from functools import cache
from typing import Any

from vramwise.app.setups import INFER_FIELDS, TRAIN_FIELDS, infer_default, train_default
from vramwise.cli.options import (
    INFER,
    SUGGESTED,
    TRAIN,
    Option,
    help_text,
    options_of,
    tokens,
)
from vramwise.web.limits import MAX_CONFIG_BYTES

COMMANDS = ("infer", "train", "fit")
REFUSED = ("from", "emit", "json", "help")  # parse_options refuses them (a file, or another output)
_TYPES: dict[Any, str] = {None: "bool", int: "int", float: "float", str: "str", tokens: "int"}
VERSION = "1"


def _long(option: Option) -> tuple[str, ...]:
    return tuple(f[2:] for f in option.flags if f.startswith("--"))


def flag_of(option: Option) -> str:
    """The name a request uses for the option: the positional's name, else its shortest long flag (``gpu-util``
    rather than ``gpu-memory-utilization``; every long flag is accepted)."""
    if option.name == "model":
        return "model"
    return min(_long(option), key=len)


def listed(command: str) -> tuple[Option, ...]:
    """The options a request may send for ``command``: all of the command line's but the refused ones."""
    return tuple(o for o in options_of(command) if o.name == "model" or not set(_long(o)) & set(REFUSED))


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return ",".join(str(_json_value(v)) for v in value) or None  # a comma-separated option: empty = its default
    return value


def _default(option: Option, command: str) -> Any:
    """The default the command line applies: the setup's (infer's, train's; fit's training one), else the table's."""
    if command == INFER and option.name in INFER_FIELDS:
        return _json_value(infer_default(option.name))
    if command in (TRAIN, "fit") and option.name in TRAIN_FIELDS:
        return _json_value(train_default(option.name))
    if command == "fit" and option.name in INFER_FIELDS:
        return _json_value(infer_default(option.name))
    return option.default


def _row(option: Option, command: str) -> dict[str, Any]:
    choices = option.choices or SUGGESTED.get(option.name)
    row = {
        "flag": flag_of(option),
        "flags": list(_long(option)) if option.name != "model" else ["model"],
        "dest": option.name,
        "group": option.group.value,
        # the positional MODEL has no type in the table (argparse's default, a string): None means a flag elsewhere
        "type": "str" if option.name == "model" else _TYPES.get(option.type, "str"),
        "tokens": option.type is tokens,  # an int that may also be written 128k (10^3) or 128K (2^10)
        "choices": list(choices) if choices else None,
        "default": _default(option, command),
        "help": help_text(option, command),
        "required": option.name == "model" or command in option.required_in,
        "exclusive": option.exclusive,
    }
    if command == "fit" and option.name in INFER_FIELDS and option.name in TRAIN_FIELDS:
        row["default_infer"] = _json_value(infer_default(option.name))  # fit --infer's default
    return row


@cache
def options_listing() -> dict[str, list[dict[str, Any]]]:
    """``{"infer": [...], "train": [...], "fit": [...]}``: each option as a form needs it (the CLI's names,
    defaults and help)."""
    return {c: [_row(o, c) for o in listed(c)] for c in COMMANDS}


# --- OpenAPI 3.1 -------------------------------------------------------------------------------------------------

_ERROR = {
    "type": "object",
    "required": ["error", "field", "allowed"],
    "properties": {
        "error": {"type": "string", "description": "one line, the words the command line prints after "
                                                   "'vramwise: error:'"},
        "field": {"type": ["string", "null"], "description": "the option's name (its dest), or null"},
        "allowed": {"type": ["string", "null"], "description": "what the field takes, in words, or null"},
    },
}
# docs/json-schema.md: the top-level keys every document of each schema has
_ESTIMATE_KEYS = ["schema", "version", "kind", "mode", "model", "setup", "terms", "peak", "phases", "host", "missing",
                  "notes", "gpu"]
_FIT_KEYS = ["schema", "version", "question", "model", "gpu", "fits", "reason", "assumptions", "notes", "answer"]


def _property(option: Option) -> dict[str, Any]:
    text = help_text(option, "fit" if "fit" in option.commands else option.commands[0])
    if option.name == "model":
        return {"type": "string", "description": "a catalog name, a hub id org/name[@revision], or a size like 14b "
                                                 "(never a path: a config.json's text goes in `config`)"}
    if option.type is None:
        return {"type": ["boolean", "null"], "description": text}
    if option.choices:
        return {"enum": [*option.choices, None], "description": text}
    kind = {int: ["integer", "null"], float: ["number", "null"], tokens: ["integer", "string", "null"]}
    return {"type": kind.get(option.type, ["string", "null"]), "description": text}


def _args_schema(command: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for option in listed(command):
        for name in (["model"] if option.name == "model" else _long(option)):
            properties[name] = _property(option)
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "description": "options by their long flag without dashes (every spelling the command line takes), "
                           "and `model`; a switch is true or false; null is not given"}


def _request(command: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["args"],
        "additionalProperties": False,
        "properties": {
            "args": {"$ref": f"#/components/schemas/{command}_args"},
            "config": {"type": ["string", "null"], "maxLength": MAX_CONFIG_BYTES,
                       "description": "a config.json's text, instead of `model`"},
        },
    }


def _responses(ok: dict[str, Any], what: str) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}}}
    return {
        "200": {"description": what, "content": {"application/json": {"schema": ok}},
                "headers": {"X-Vramwise-Fits": {"schema": {"type": "string", "enum": ["true", "false"]},
                                                "description": "whether it fits (the CLI's exit status 0 or 3)"},
                            "X-Vramwise-Command": {"schema": {"type": "string"},
                                                   "description": "the same request as a command line (left out "
                                                                  "when it is not printable ASCII)"}}},
        "400": {"description": "bad input: one line naming the field", **error},
        "413": {"description": "the body or the config is too large", **error},
        "415": {"description": "the body is not sent as application/json", **error},
        "429": {"description": "too many requests from this address", **error},
        "500": {"description": "a bug: a generic body, never a traceback", **error},
        "503": {"description": "the estimate took too long, or every worker is busy with one that did", **error},
    }


# One request per operation, shown by API browsers and replayed by schemathesis's explicit-examples phase
EXAMPLES = {
    "infer": {"args": {"model": "llama-3-8b", "gpu": "l4", "engine": "vllm", "max-model-len": 8192}},
    "train": {"args": {"model": "llama-3-8b", "gpu": "a100-80gb", "peft": "lora", "batch": 4, "seq": 2048}},
    "fit": {"args": {"model": "llama-2-7b", "gpu": "rtx-4090", "max": "batch", "peft": "qlora"}},
}


def _estimate_ops(paths: dict[str, Any]) -> None:
    docs = {"infer": ("estimate", "memory to serve or generate with a model (vramwise infer --json)"),
            "train": ("estimate_or_stages", "memory to train or fine-tune a model, per GPU (vramwise train --json)"),
            "fit": ("fit", "what fits a GPU (vramwise fit --json)")}
    for command, (schema, summary) in docs.items():
        paths[f"/api/v1/{command}"] = {"post": {
            "operationId": command,
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{command}_request"}, "example": EXAMPLES[command]}}},
            "responses": _responses({"$ref": f"#/components/schemas/{schema}"}, "the --json document"),
        }}


def _listing(summary: str, key: str, parameters: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    ok = {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": {"type": "object"}}}}
    return {"get": {"summary": summary, "parameters": list(parameters),
                    "responses": {"200": {"description": summary, "content": {"application/json": {"schema": ok}}},
                                  "429": {"description": "too many requests",
                                          "content": {"application/json": {
                                              "schema": {"$ref": "#/components/schemas/error"}}}}}}}


@cache
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API (the responses are docs/json-schema.md's documents)."""
    paths: dict[str, Any] = {}
    _estimate_ops(paths)
    options_ok = {"type": "object", "required": list(COMMANDS),
                  "properties": {c: {"type": "array", "items": {"type": "object"}} for c in COMMANDS}}
    paths["/api/v1/options"] = {"get": {
        "summary": "every option of infer, train and fit: flag, dest, group, type, choices, default, help",
        "responses": {"200": {"description": "the options", "content": {"application/json": {"schema": options_ok}}}},
    }}
    query = {"name": "q", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200},
             "description": "keep the models whose name or hub id contains this text (case-insensitive)"}
    paths["/api/v1/models"] = _listing("the model catalog (vramwise models --json)", "models", [query])
    paths["/api/v1/gpus"] = _listing("the GPU catalog (vramwise gpus --json)", "gpus")
    paths["/api/v1/formats"] = _listing("the weight formats (vramwise formats --json)", "formats")
    schemas: dict[str, Any] = {"error": _ERROR}
    for command in COMMANDS:
        schemas[f"{command}_args"] = _args_schema(command)
        schemas[f"{command}_request"] = _request(command)
    schemas["estimate"] = {"type": "object", "required": _ESTIMATE_KEYS,
                           "properties": {"schema": {"const": "vramwise/estimate"}, "version": {"const": 1}},
                           "description": "docs/json-schema.md, schema vramwise/estimate v1"}
    schemas["estimate_or_stages"] = {"anyOf": [
        {"$ref": "#/components/schemas/estimate"},
        {"type": "object", "required": ["stages"],
         "properties": {"stages": {"type": "array", "items": {"$ref": "#/components/schemas/estimate"}}}},
    ]}
    schemas["fit"] = {"type": "object", "required": _FIT_KEYS,
                      "properties": {"schema": {"const": "vramwise/fit"}, "version": {"const": 1}},
                      "description": "docs/json-schema.md, schema vramwise/fit v1"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "vramwise", "version": VERSION,
                 "description": "GPU memory for transformers: the command line's --json documents over HTTP. "
                                "Every answer equals `vramwise infer|train|fit ... --json` for the same options."},
        "paths": paths,
        "components": {"schemas": schemas},
    }


__all__ = ["flag_of", "listed", "openapi", "options_listing"]
