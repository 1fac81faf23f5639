"""The MCP server's tools as plain functions: arguments in, the CLI's ``--json`` document out (no MCP SDK here).

``infer``, ``train`` and ``fit`` take the command line's options by flag name (the web API's ``args``), parsed by the
command line's own parser (``cli.options.parse_options``) and answered by the application layer's documents
(``app.documents``), so an answer equals ``vramwise COMMAND ... --json``. The listings answer as ``vramwise models
--json`` and ``vramwise gpus --json`` do, and ``list_options`` with the option table of a command. Bad input raises
the project's errors (one line naming the field); ``server.py`` turns them into error results.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vramwise.cli.options import FIT, INFER, TRAIN, parse_options, setup_values
from vramwise.errors import UsageError, shown
from vramwise.mcpserver import schemas
from vramwise.mcpserver.sent_config import with_config

Arguments = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Tool:
    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    run: Callable[[Arguments], dict[str, Any]]  # the structured answer; raises VramwiseError on bad input


def estimate(command: str, args: Arguments) -> dict[str, Any]:
    """``vramwise COMMAND ... --json``'s document for these options (``config``: a config.json's text as MODEL)."""
    options = dict(args)
    config = options.pop(schemas.CONFIG, None)
    _known(command, options)
    if config is None:
        return _document(command, parse_options(command, options))
    return with_config(config, lambda path: _document(command, parse_options(command, options, model_path=path)))


def _document(command: str, values: dict[str, Any]) -> dict[str, Any]:
    from vramwise.app import documents

    options = setup_values(values)
    if command == INFER:
        return documents.infer_document(documents.infer_request(values, options)).doc
    if command == TRAIN:
        return documents.train_document(documents.train_request(values, options)).doc
    return documents.fit_document(documents.fit_request(values, options)).doc


def _known(command: str, args: Arguments) -> None:
    """An argument the command does not take, named with the nearest ones and where the list is (the parser's own
    refusals, of ``from`` and the other outputs, keep their words)."""
    names = schemas.argument_names(command)
    for key in args:
        if isinstance(key, str) and (key in names or key in schemas.REFUSED_BY_PARSER):
            continue
        near = difflib.get_close_matches(str(key).lower().replace("_", "-"), sorted(names), n=3, cutoff=0.6)
        hint = f" (did you mean: {', '.join(near)}?)" if near else ""
        raise UsageError(f"unknown option {shown(key)} for {command}{hint}; list_options lists them", field=None,
                         allowed=None)


def _only(args: Arguments, allowed: tuple[str, ...], tool: str) -> None:
    for key in args:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no arguments"
            raise UsageError(f"unknown argument {shown(key)} for {tool}: it takes {takes}", field=str(key),
                             allowed=takes or None)


def _text(args: Arguments, key: str, default: str | None = None) -> str | None:
    value = args.get(key, default)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{key} is text, not {shown(value)}", field=key, allowed="text")
    return value


def list_models(args: Arguments) -> dict[str, Any]:
    """``vramwise models --json``, the rows whose name or hub id contain ``query`` (any case), as the web API's
    ``/api/v1/models?q=`` filters them."""
    from vramwise.app.listings import list_models as rows_of
    from vramwise.report.listings import models_json

    _only(args, ("query",), "list_models")
    query = (_text(args, "query") or "").strip().lower()
    doc: dict[str, Any] = json.loads(models_json(rows_of()))
    doc["models"] = [r for r in doc["models"] if not query or any(
        query in str(r.get(k) or "").lower() for k in ("name", "hf_id"))]
    return doc


def list_gpus(args: Arguments) -> dict[str, Any]:
    """``vramwise gpus --json``."""
    from vramwise.app.listings import list_gpus as rows_of
    from vramwise.report.listings import gpus_json

    _only(args, (), "list_gpus")
    doc: dict[str, Any] = json.loads(gpus_json(rows_of()))
    return doc


def list_options(args: Arguments) -> dict[str, Any]:
    """The option table of infer, train or fit: each option's flag (the argument's name), type, choices, default,
    help."""
    _only(args, ("command",), "list_options")
    command = _text(args, "command")
    if command not in schemas.COMMANDS:
        allowed = ", ".join(schemas.COMMANDS)
        raise UsageError(f"command must be one of {allowed}, not {shown(command)}", field="command", allowed=allowed)
    return {"command": command, "options": schemas.option_rows(command)}


_SAME = (
    "Arguments are the command line's options by long flag name without the dashes (batch, peft, gpu-util), "
    "`model` for MODEL (or `config`: a config.json's text); the answer is exactly the command's `--json` document "
    "(docs/json-schema.md). "
    "list_options lists every option with its help."
)
TOOLS: tuple[Tool, ...] = (
    Tool(name=INFER, title="Inference memory",
         description="GPU memory to serve or generate with a model, per GPU, per term (vramwise infer): the peak, "
                     "its phase, each term with its formula and source; with gpu, whether it fits; with engine "
                     "(vllm, sglang, llama.cpp, hf), that engine's plan and KV capacity. " + _SAME,
         input_schema=schemas.input_schema(INFER), output_schema=schemas.output_schema(INFER),
         run=lambda args: estimate(INFER, args)),
    Tool(name=TRAIN, title="Training memory",
         description="GPU memory to train or fine-tune a model, per GPU (vramwise train): full training, LoRA, "
                     "QLoRA, ZeRO, FSDP, tensor/pipeline/context parallel, recompute, framework presets. " + _SAME,
         input_schema=schemas.input_schema(TRAIN), output_schema=schemas.output_schema(TRAIN),
         run=lambda args: estimate(TRAIN, args)),
    Tool(name=FIT, title="What fits a GPU",
         description="What fits a GPU (vramwise fit): the largest batch, sequence or context (max), the fewest "
                     "GPUs (min-gpus), the best weight format (best-format) or ranked parallel layouts (layouts); "
                     "give exactly one of them, and gpu. Inference with infer: true. " + _SAME,
         input_schema=schemas.input_schema(FIT), output_schema=schemas.output_schema(FIT),
         run=lambda args: estimate(FIT, args)),
    Tool(name="list_models", title="Model catalog",
         description="The built-in models (vramwise models --json): name, model type, parameters, hub id; "
                     "filtered by query.",
         input_schema=schemas.QUERY, output_schema=schemas.MODELS, run=list_models),
    Tool(name="list_gpus", title="GPU catalog",
         description="The built-in GPUs (vramwise gpus --json): name, aliases, memory_bytes (the budget gpu checks, "
                     "the CUDA-visible total).",
         input_schema=schemas.NOTHING, output_schema=schemas.GPUS, run=list_gpus),
    Tool(name="list_options", title="Options of a command",
         description="Every option infer, train or fit takes: the argument name, type, choices, default and help.",
         input_schema=schemas.COMMAND, output_schema=schemas.OPTIONS, run=list_options),
)
BY_NAME = {t.name: t for t in TOOLS}
