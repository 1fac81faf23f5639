"""The MCP server's tools and schemas without the SDK (these run where the mcp extra is not installed).

Oracles: docs/json-schema.md's tables for the output schemas' keys, the option table (cli/options.py) for the input
schemas, the command line's own `--json` and one-line messages for the answers (tests/cli_run.py).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cli_run import run

from vramwise.cli.options import options_of
from vramwise.mcpserver import server, tools
from vramwise.mcpserver.schemas import input_schema, option_rows, output_schema

ROOT = Path(__file__).resolve().parents[2]


def _doc_keys(heading: str) -> set[str]:
    """The top-level keys of one JSON document in docs/json-schema.md: its first table's backquoted names."""
    text = (ROOT / "docs" / "json-schema.md").read_text()
    section = text[text.index(heading):]
    table = re.search(r"\n\|[^\n]*\|\n\|[-| ]+\|\n((?:\|[^\n]*\n)+)", section)
    assert table
    keys: set[str] = set()
    for row in table.group(1).splitlines():
        keys.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return keys


def test_output_schemas_follow_the_json_contract() -> None:
    estimate = output_schema("infer")
    assert set(estimate["properties"]) == _doc_keys("# JSON output: schema `vramwise/estimate`")
    assert set(output_schema("fit")["properties"]) == _doc_keys("## `vramwise fit --json`")
    assert output_schema("train")["$defs"]["estimate"] == estimate


def test_schemas_are_valid_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")  # the mcp SDK's dependency
    for command in ("infer", "train", "fit"):
        jsonschema.Draft202012Validator.check_schema(input_schema(command))
        jsonschema.Draft202012Validator.check_schema(output_schema(command))


# documents of every shape the three commands print: each must pass its tool's output schema (else an MCP client
# refuses the answer as "invalid structured content")
SHAPES = [
    ("infer", {"model": "14b"}),  # a bare size: no model_type, missing terms
    ("infer", {"model": "llama-3-8b", "mode": "textbook", "gpu": "t4"}),
    ("infer", {"model": "qwen2-7b", "engine": "llama.cpp", "gpu": "rtx-4090", "ctx-size": 8192}),
    ("infer", {"model": "qwen2-7b", "engine": "sglang", "gpu": "h100"}),
    ("infer", {"model": "llama-3-8b", "device-map": "auto", "gpu": "2xrtx-4090"}),
    ("infer", {"model": "llama-3.1-70b", "engine": "vllm", "gpu": "a100-40gb", "margin": 0.1}),  # does not fit
    ("train", {"model": "llama-3-8b", "pp": 2, "per-stage": True, "gpu": "2xa100-80gb"}),
    ("train", {"model": "llama-3-8b", "gpu": "rtx-4090"}),  # does not fit: advice
    ("train", {"model": "llama-3-8b", "dp": 4, "zero": 3, "offload": "optimizer"}),  # host terms
    ("fit", {"model": "llama-3-8b", "gpu": "l4", "infer": True, "best-format": True}),
    ("fit", {"model": "llama-3-8b", "gpu": "8xh100", "layouts": 8, "top": 2}),
    ("fit", {"model": "llama-3.1-70b", "gpu": "t4", "max": "batch"}),  # nothing fits
]


@pytest.mark.parametrize(("command", "args"), SHAPES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(SHAPES)])
def test_every_document_shape_passes_its_output_schema(command: str, args: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc, text, error = server.answer(command, args)
    assert not error, text
    jsonschema.Draft202012Validator(output_schema(command)).validate(doc)


@pytest.mark.parametrize("command", ["infer", "train", "fit"])
def test_input_schema_is_the_option_table(command: str) -> None:
    schema = input_schema(command)
    props = schema["properties"]
    for option in options_of(command):
        longs = [f[2:] for f in option.flags if f.startswith("--")]
        name = "model" if option.name == "model" else min(longs, key=len)
        if option.name in ("source", "emit", "json"):  # a file on the server's machine, another output
            assert name not in props
            continue
        prop = props[name]
        if option.type is None and name != "model":
            assert prop["type"] == "boolean", name
        if option.choices:
            assert prop["enum"] == list(option.choices), name
        for alias in set(longs) - {name}:
            assert alias in prop["description"], name
    assert schema["required"] == (["gpu"] if command == "fit" else [])  # model or config: the description says so
    assert [r["flag"] for r in option_rows(command)] == [k for k in props if k != "config"]


def test_the_options_listing_is_the_web_apis() -> None:
    from vramwise.web.describe import options_listing  # no web server needed: the listing is built from the table

    for command in ("infer", "train", "fit"):
        assert option_rows(command) == options_listing()[command], command
    peft = next(r for r in option_rows("train") if r["flag"] == "peft")
    assert peft["choices"] and "lora" in peft["choices"] and peft["default"] == "none"
    assert input_schema("train")["properties"]["peft"]["enum"] == peft["choices"]  # a setup's choices, as an enum


def test_defaults_are_the_setups() -> None:
    infer, train = input_schema("infer")["properties"], input_schema("train")["properties"]
    # InferSetup(): context 2048, kv_block 16, gpu_util 0.9; TrainSetup(): seq 2048, lora_r 16, optimizer adamw
    assert (infer["context"]["default"], infer["kv-block"]["default"]) == (2048, 16)
    assert infer["gpu-util"]["default"] == 0.9
    assert (train["seq"]["default"], train["lora-r"]["default"], train["optimizer"]["default"]) == (2048, 16, "adamw")
    assert input_schema("fit")["properties"]["units"]["default"] == "gib"


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, *argv, "--json")
    assert code in (0, 3), err
    return dict(json.loads(out))


def test_an_answer_is_the_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = {"model": "qwen2-7b", "peft": "qlora", "seq": "4k", "recompute": "full", "gpu": "l4"}
    doc, text, error = server.answer("train", args)
    assert not error and doc == _cli_json(capsys, "train", "qwen2-7b", "--peft", "qlora", "--seq", "4k",
                                          "--recompute", "full", "--gpu", "l4")
    assert json.loads(text) == doc
    doc, _text, error = server.answer("fit", {"model": "llama-2-70b", "gpu": "h100", "min-gpus": True})
    assert not error and doc == _cli_json(capsys, "fit", "llama-2-70b", "--gpu", "h100", "--min-gpus")


def test_fit_without_a_question_names_them() -> None:
    doc, text, error = server.answer("fit", {"model": "llama-3-8b", "gpu": "h100"})
    assert error and doc is None
    assert "--max" in text and "--min-gpus" in text and "--layouts" in text, text


def test_a_bug_is_one_line_without_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(args: object) -> dict[str, Any]:
        raise RuntimeError("secret detail")

    monkeypatch.setitem(tools.BY_NAME, "infer", replace(tools.BY_NAME["infer"], run=boom))
    doc, text, error = server.answer("infer", {"model": "llama-3-8b"})
    assert error and doc is None and "\n" not in text and "secret" not in text and "internal error" in text


def test_listing_arguments_are_checked() -> None:
    for name, args, field in [("list_gpus", {"units": "gb"}, "units"), ("list_models", {"query": 3}, "query"),
                              ("list_options", {}, "command")]:
        doc, text, error = server.answer(name, args)
        assert error and doc is None and field in text, (name, text)
    doc, _text, error = server.answer("list_models", {"query": "mixtral"})
    assert not error and doc and {m["name"] for m in doc["models"]} >= {"mixtral-8x7b"}
    assert all("mixtral" in m["name"] or "mixtral" in m["hf_id"].lower() for m in doc["models"])


@pytest.mark.parametrize("model", ["../config.json", "/etc/passwd", "~/x", "dir/sub/config.json", "x.gguf", "tests"])
def test_a_path_is_never_read(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # "tests" names no catalog model or size but exists under the server's working directory: resolve_model would
    # read it as a local folder (spec/load.py step 5)
    monkeypatch.chdir(ROOT)
    doc, text, error = server.answer("infer", {"model": model})
    assert error and doc is None and text.startswith("a path cannot be sent to the server"), (model, text)


def test_a_hub_id_is_validated_before_any_request() -> None:
    # huggingface_hub's validate_repo_id refuses ".." in a repo id; no request is made (none could be: offline)
    _doc, text, error = server.answer("train", {"model": "org/bad..name", "peft": "lora"})
    assert error and text == "MODEL 'org/bad..name' is not a valid hub id: Cannot have -- or .. in repo_id"


def test_a_sent_config_is_capped() -> None:
    _doc, text, error = server.answer("infer", {"config": " " * (200 * 2**10 + 1)})
    assert error and text == "config is over 204,800 bytes"


def test_without_the_extra_the_command_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)  # import mcp then raises ImportError
    code, out, err = run(capsys, "mcp")
    assert code == 2 and out == ""
    assert err == "vramwise: error: vramwise mcp needs the mcp extra: pip install 'vramwise[mcp]'\n"
