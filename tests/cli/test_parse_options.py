"""``parse_options``: options sent as JSON (the web API, the MCP server) parsed by the command line's own parser.

Oracles: the option table itself (every long flag of every option of infer, train and fit is taken, so a new row
is covered without touching this file), argparse's own result for the same argv, and the CLI's --json output for
the same setup (tests/cli_run.py).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
from cli_run import run

from vramwise.app import documents
from vramwise.cli.json_args import REFUSED, long_flags, names_of
from vramwise.cli.options import (
    Option,
    build_parser,
    command_line,
    options_of,
    parse_options,
    setup_values,
    tokens,
)
from vramwise.errors import UsageError, VramwiseError
from vramwise.report.json_out import render_json

COMMANDS = ("infer", "train", "fit")


def _sample(option: Option) -> tuple[Any, Any]:
    """A JSON value argparse takes for the option, and the value it parses to."""
    if option.type is None:
        return True, True
    if option.choices:
        return option.choices[-1], option.choices[-1]
    if option.type is tokens:
        return "4k", 4000
    if option.type is int:
        return 3, 3
    if option.type is float:
        return 0.25, 0.25
    return "x", "x"


def _base(command: str, option: Option) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "llama-2-7b"}
    if command == "fit":
        base["gpu"] = "h100"
        if option.exclusive is None:
            base["max"] = "batch"
    return base


@pytest.mark.parametrize("command", COMMANDS)
def test_every_long_flag_of_every_option_is_taken(command: str) -> None:
    names = names_of(command)
    assert names, command
    covered = set()
    for name, option in names.items():
        if name == "model":
            continue
        sent, parsed = _sample(option)
        values = parse_options(command, {**_base(command, option), name: sent})
        assert values[option.name] == parsed, (command, name)
        covered.add(option.name)
    table = {o.name for o in options_of(command) if not set(long_flags(o)) & set(REFUSED)} - {"model"}
    assert covered == table


@pytest.mark.parametrize("command", COMMANDS)
def test_the_values_are_argparse_own(command: str) -> None:
    args = {"model": "llama-2-7b", "batch": 2, "tp": 2, "units": "gb"}
    argv = [command, "llama-2-7b", "--batch", "2", "--tp", "2", "--units", "gb"]
    if command == "fit":
        args |= {"gpu": "h100", "max": "seq"}
        argv += ["--gpu", "h100", "--max", "seq"]
    expected = vars(build_parser(command).parse_args(argv))
    expected.pop("command")
    assert parse_options(command, args) == expected


SETUPS = [
    ("infer", {"model": "llama-3-8b", "gpu": "a100-80gb", "batch": 8, "context": 4096, "kv-dtype": "fp8"}),
    ("infer", {"model": "llama-2-7b", "gpu": "l40s", "engine": "sglang", "mem-fraction-static": 0.8}),
    ("infer", {"model": "14b", "gpu": "rtx-4090"}),
    ("train", {"model": "llama-2-7b", "gpu": "a100-80gb", "peft": "qlora", "batch": 2, "seq": "2k"}),
    ("train", {"model": "llama-2-7b", "gpu": "4xa100-80gb", "framework": "deepspeed", "zero": 2}),
    ("fit", {"model": "llama-2-7b", "gpu": "h100", "min-gpus": True}),
    ("fit", {"model": "llama-2-7b", "gpu": "l4", "max": "context", "infer": True, "margin": 0.1}),
    ("train", {"model": "llama-2-7b", "gpu": "a100-80gb", "peft": "lora", "range": True, "max-seq": "8k"}),
    ("infer", {"model": "llama-3-8b", "gpu": "l4", "range": True}),
    ("fit", {"model": "llama-2-7b", "gpu": "a100-80gb", "max": "batch", "range": True}),
    # found by fuzzing the API: a framework preset with --cuda-context was a TypeError traceback (app/fitting.py
    # handed option names to the presets, which read flat names) in train's advice and fit's search
    ("train", {"model": "llama-2-7b", "gpu": "a100-80gb", "cuda-context": 8, "framework": "megatron"}),
    ("fit", {"model": "llama-2-7b", "gpu": "a100-80gb", "cuda-context": 600, "framework": "deepspeed",
             "min-gpus": True}),
]


def _argv(command: str, args: dict[str, Any]) -> list[str]:
    argv = [command, args["model"]]
    for key, value in args.items():
        if key != "model":
            argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return [*argv, "--json"]


def _document(command: str, values: dict[str, Any]) -> dict[str, Any]:
    done = documents.document_for(command, values, setup_values(values))
    return json.loads(render_json(done.doc))  # tuples as lists


@pytest.mark.parametrize(("command", "args"), SETUPS)
def test_the_document_equals_the_cli_json(capsys: pytest.CaptureFixture[str], command: str,
                                          args: dict[str, Any]) -> None:
    code, out, err = run(capsys, *_argv(command, args))
    assert code in (0, 3), err
    assert _document(command, parse_options(command, args)) == json.loads(out)


@pytest.mark.parametrize(
    ("command", "args", "field"),
    [
        ("infer", {"model": "llama-2-7b", "from": "x.json"}, "source"),
        ("infer", {"model": "llama-2-7b", "emit": "vllm"}, "emit"),
        ("train", {"model": "llama-2-7b", "json": True}, "json"),
        ("train", {"model": "llama-2-7b", "help": True}, "help"),
        ("train", {"model": "llama-2-7b", "sp": "yes"}, "sp"),
        ("train", {"model": "llama-2-7b", "lora-r": 1.5}, "lora_r"),
        ("train", {"model": "llama-2-7b", "lora-r": {"a": 1}}, "lora_r"),
        ("train", {"model": "llama-2-7b", "lora-r": 2**300}, "lora_r"),
        ("infer", {"model": "llama-2-7b", "batch": False}, "batch"),
        ("infer", {"model": "llama-2-7b", "serve": True, "gpu-util": "high"}, "gpu_util"),
        ("fit", {"model": "llama-2-7b", "gpu": "h100", "max": "batch", "layouts": 8}, "layouts"),
        ("fit", {"model": "llama-2-7b", "max": "batch"}, "gpu"),
        ("fit", {"model": "llama-2-7b", "gpu": "h100"}, "question"),
        ("infer", {"model": "../etc/passwd"}, "model"),
        ("infer", {"model": "C:\\models\\x"}, "model"),
        ("infer", {"model": "org/name/extra"}, "model"),
        ("infer", {"model": "x.gguf"}, "model"),
        ("infer", {"model": "org/a..b"}, "model"),
        ("infer", {"model": ["llama-2-7b"]}, "model"),
        ("infer", {}, "model"),
        ("infer", {"batchh": 1}, None),
    ],
)
def test_refusals_are_one_line_naming_the_field(command: str, args: dict[str, Any], field: str | None) -> None:
    with pytest.raises(VramwiseError) as caught:
        parse_options(command, args)
    assert caught.value.field == field
    assert "\n" not in str(caught.value) and str(caught.value)


def test_argparse_words_are_the_cli_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_options("infer", {"model": "llama-2-7b", "context": "12q"})
    code, _, err = run(capsys, "infer", "llama-2-7b", "--context", "12q")
    assert code == 2
    assert err == f"vramwise: error: {caught.value} (see 'vramwise infer --help')\n"
    assert caught.value.allowed == "an integer, or 128k = 128,000, 128K = 131,072"


def test_a_value_that_looks_like_a_flag_stays_a_value() -> None:
    # argv is --flag=value and "--" before MODEL: "-1" and "-h" are values, never options
    assert parse_options("infer", {"model": "llama-2-7b", "chunked-prefill-size": -1})["chunked_prefill_size"] == -1
    assert parse_options("infer", {"model": "-h"})["model"] == "-h"


def test_a_switch_sent_as_the_string_true_says_the_string_is_the_trouble() -> None:
    # it once said "true or false, not 'true'", which reads as a contradiction to whoever sent "true"
    with pytest.raises(UsageError) as err:
        parse_options("infer", {"model": "llama-2-7b", "serve": "true"})
    assert str(err.value) == "--serve is a switch: JSON true or false (no quotes), not the string 'true'"
    assert err.value.field == "serve"
    with pytest.raises(UsageError, match=r"--serve is a switch: JSON true or false \(no quotes\), not 1$"):
        parse_options("infer", {"model": "llama-2-7b", "serve": 1})


def test_an_unknown_option_suggests_the_near_name() -> None:
    with pytest.raises(UsageError, match="did you mean: gpu-util"):
        parse_options("infer", {"model": "llama-2-7b", "gpu_util": 0.8})


def test_the_server_written_config_is_the_one_path_taken(tmp_path: Any) -> None:
    path = str(tmp_path / "config.json")
    assert parse_options("infer", {"batch": 2}, model_path=path)["model"] == path
    with pytest.raises(UsageError):
        parse_options("infer", {"model": "llama-2-7b"}, model_path=path)


def test_a_hub_id_that_is_a_local_folder_is_refused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # resolve_model reads an existing path before the hub: a server must not read its own disk
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="a path cannot be sent"):
        parse_options("infer", {"model": "org/name"})
    (tmp_path / "gpt").mkdir()
    with pytest.raises(UsageError, match="a path cannot be sent"):
        parse_options("infer", {"model": "gpt"})
    assert parse_options("infer", {"model": "org/other"})["model"] == "org/other"


@pytest.mark.parametrize(("command", "args"), SETUPS)
def test_the_command_line_shown_is_the_same_request(capsys: pytest.CaptureFixture[str], command: str,
                                                    args: dict[str, Any]) -> None:
    line = command_line(command, args)
    argv = shlex.split(line)
    assert argv[0] == "vramwise" and argv[-1] == "--json"
    code, out, err = run(capsys, *argv[1:])
    assert code in (0, 3), err
    assert _document(command, parse_options(command, args)) == json.loads(out)


def test_the_command_line_quotes_what_a_shell_would_split() -> None:
    line = command_line("train", {"model": "llama-2-7b", "nccl-env": "A=1 B", "sp": True, "tp": None, "dp": False})
    assert line == "vramwise train llama-2-7b --nccl-env 'A=1 B' --sp --json"
    assert command_line("infer", {"batch": 2}, model="config.json") == "vramwise infer config.json --batch 2 --json"
