"""`vramwise mcp` answered by the mcp SDK's own client over stdio (issue 16).

The server runs as a subprocess (`python -m vramwise mcp`), the client is the SDK's ClientSession over stdio_client,
which checks every answer against the tool's output schema. The oracle of every document is the command line's
`--json` for the same setup (tests/cli_run.py), and of every refusal the command line's own one-line message.
test_tools.py covers what needs no SDK (the schemas against docs/json-schema.md, the missing extra).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")  # the mcp extra (the test extra lists it; CI runs this)

import anyio
from cli_run import run
from mcp import ClientSession, StdioServerParameters, stdio_client
from tiny_configs import FAMILIES

from vramwise.cli.options import options_of
from vramwise.mcpserver.schemas import input_schema, output_schema
from vramwise.mcpserver.sent_config import SOURCE

ROOT = Path(__file__).resolve().parents[2]

# the two setups of the issue: a LoRA fine-tune and a vLLM serving case, as tool arguments and as the command line
LORA = {"model": "llama-3-8b", "peft": "lora", "batch": 4, "seq": 1024, "gpu": "rtx-4090"}
LORA_ARGV = ("train", "llama-3-8b", "--peft", "lora", "--batch", "4", "--seq", "1024", "--gpu", "rtx-4090")
SERVING = {"model": "llama-3-8b", "engine": "vllm", "gpu": "h100", "max-model-len": "8k", "gpu-util": 0.85}
SERVING_ARGV = ("infer", "llama-3-8b", "--engine", "vllm", "--gpu", "h100", "--max-model-len", "8k", "--gpu-util",
                "0.85")
FIT = {"model": "llama-3-8b", "gpu": "rtx-4090", "max": "batch", "peft": "qlora"}
FIT_ARGV = ("fit", "llama-3-8b", "--gpu", "rtx-4090", "--max", "batch", "--peft", "qlora")
# a model of the caller's own: a config.json's text, never its path
CONFIG = json.dumps(FAMILIES["llama"])
SENT = {"config": CONFIG, "batch": 2, "context": 512, "new-tokens": 16}
SENT_ARGV = ("--batch", "2", "--context", "512", "--new-tokens", "16")
# bad input, each with the command line's argv for the same mistake (None: a server-only refusal)
BAD: dict[str, tuple[str, dict[str, Any], tuple[str, ...] | None]] = {
    "type": ("infer", {"model": "llama-3-8b", "batch": "four"}, ("infer", "llama-3-8b", "--batch", "four")),
    "choice": ("train", {"model": "llama-3-8b", "peft": "lorax"}, ("train", "llama-3-8b", "--peft", "lorax")),
    "setup": ("infer", {"model": "llama-3-8b", "batch": 0}, ("infer", "llama-3-8b", "--batch", "0")),
    "model": ("infer", {"model": "no-such-model-xyz"}, ("infer", "no-such-model-xyz")),
    "path": ("infer", {"model": "/etc/passwd"}, None),
    "from": ("train", {"model": "llama-3-8b", "from": "/etc/passwd"}, None),
    "unknown": ("train", {"model": "llama-3-8b", "no-such-option": 1}, None),
    "listing": ("list_options", {"command": "plot"}, None),
    "config": ("infer", {"config": "{not json"}, None),
    "both": ("infer", {"model": "llama-3-8b", "config": CONFIG}, None),
}


async def _talk() -> dict[str, Any]:
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    server = StdioServerParameters(command=sys.executable, args=["-m", "vramwise", "mcp"], env=env, cwd=str(ROOT))
    out: dict[str, Any] = {}
    with anyio.fail_after(120), open(os.devnull, "w") as log:  # a server that stops answering fails, never hangs
        async with stdio_client(server, errlog=log) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            out["tools"] = {t.name: t for t in (await session.list_tools()).tools}
            calls = {"train": ("train", LORA), "infer": ("infer", SERVING), "fit": ("fit", FIT),
                     "models": ("list_models", {"query": "LLAMA-3"}), "gpus": ("list_gpus", {}),
                     "options": ("list_options", {"command": "train"}), "sent": ("infer", SENT),
                     **{f"bad {k}": (tool, args) for k, (tool, args, _argv) in BAD.items()},
                     "no tool": ("no_such_tool", {})}
            for key, (tool, args) in calls.items():
                out[key] = await session.call_tool(tool, args)  # an answer is checked against its output schema
    return out


@pytest.fixture(scope="module")
def answers() -> dict[str, Any]:
    """One server, every call (its start-up is most of the test's time)."""
    return anyio.run(_talk)


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, *argv, "--json")
    assert code in (0, 3), err
    return dict(json.loads(out))


def test_every_tool_lists_its_input_and_output_schemas(answers: dict[str, Any]) -> None:
    tools = answers["tools"]
    assert set(tools) == {"infer", "train", "fit", "list_models", "list_gpus", "list_options"}
    for tool in tools.values():
        assert tool.input_schema["type"] == "object" and tool.output_schema["type"] == "object", tool.name
        assert tool.description, tool.name
    for command in ("infer", "train", "fit"):
        listed = tools[command].input_schema
        assert listed == input_schema(command)
        assert tools[command].output_schema == output_schema(command)
        # every option of the command line but the three a server refuses, by its shortest long flag; and config
        flags = {"model" if o.name == "model" else min((f[2:] for f in o.flags if f.startswith("--")), key=len)
                 for o in options_of(command)}
        assert set(listed["properties"]) == flags - {"from", "emit", "json"} | {"config"}
        assert "model" in listed["properties"] and "config" in listed["properties"]
        assert "model or config" in listed["description"]
    fit = tools["fit"].input_schema
    assert "gpu" in fit["required"] and fit["properties"]["max"]["enum"] == ["batch", "seq", "context"]
    train = tools["train"].input_schema["properties"]
    assert train["batch"]["type"] == "integer" and train["batch"]["default"] == 1  # TrainSetup().batch
    assert train["seq"]["type"] == ["integer", "string"]  # a token count: 8192 or "8k"
    assert "rank" in train["lora-r"]["description"] or "LoRA" in train["lora-r"]["description"]


def test_train_lora_is_the_cli_json(answers: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    result = answers["train"]
    assert not result.is_error, result.content
    expected = _cli_json(capsys, *LORA_ARGV)
    assert result.structured_content == expected
    assert json.loads(result.content[0].text) == expected  # the text content: the same document
    assert expected["setup"]["peft"] == "lora" and expected["setup"]["batch"] == 4


def test_infer_engine_is_the_cli_json(answers: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    result = answers["infer"]
    assert not result.is_error, result.content
    expected = _cli_json(capsys, *SERVING_ARGV)
    assert result.structured_content == expected
    assert expected["engine"]["name"] == "vllm" and expected["capacity"]["kv_tokens"] > 0


def test_fit_is_the_cli_json(answers: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    result = answers["fit"]
    assert not result.is_error, result.content
    assert result.structured_content == _cli_json(capsys, *FIT_ARGV)


def test_listings_are_the_cli_json(answers: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    models = _cli_json(capsys, "models")["models"]
    wanted = [m for m in models if "llama-3" in m["name"].lower() or "llama-3" in m["hf_id"].lower()]
    assert wanted and answers["models"].structured_content == {"models": wanted}
    assert answers["gpus"].structured_content == _cli_json(capsys, "gpus")
    rows = answers["options"].structured_content["options"]
    listed = answers["tools"]["train"].input_schema["properties"]
    assert [r["flag"] for r in rows] == [k for k in listed if k != "config"]  # the same table, the same names
    peft = next(r for r in rows if r["flag"] == "peft")
    assert peft["dest"] == "peft" and peft["default"] == "none" and peft["group"] == "setup"


def _cli_error(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> str:
    """The command line's one line for the same mistake, without its `--help` hint (a tool has no --help)."""
    code, _out, err = run(capsys, *argv, "--json")
    assert code == 2, err
    (line,) = err.strip().splitlines()
    return re.sub(r" \(see 'vramwise \w+ --help'\)$", "", line.removeprefix("vramwise: error: "))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_an_error_result_naming_the_field(
    case: str, answers: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = answers[f"bad {case}"]
    assert result.is_error and result.structured_content is None
    (content,) = result.content
    text = content.text
    assert "\n" not in text and "Traceback" not in text
    _tool, _args, argv = BAD[case]
    if argv is not None:
        assert text == _cli_error(capsys, argv)  # the command line's own words
    named = {"type": "batch", "choice": "peft", "setup": "batch", "model": "no-such-model-xyz", "path": "path",
             "from": "from", "unknown": "no-such-option", "listing": "command", "config": "config.json",
             "both": "config"}[case]
    assert named in text, text


def test_a_config_sent_as_text_is_the_cli_json_of_that_file(
    answers: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = answers["sent"]
    assert not result.is_error, result.content
    path = tmp_path / "uploaded" / "config.json"  # the server's private layout: the model is named "uploaded"
    path.parent.mkdir()
    path.write_text(CONFIG)
    expected = json.loads(json.dumps(_cli_json(capsys, "infer", str(path), *SENT_ARGV)).replace(str(path), SOURCE))
    assert result.structured_content == expected
    assert str(tmp_path) not in result.content[0].text and "vramwise-mcp-" not in result.content[0].text


def test_an_unknown_tool_is_an_error_result(answers: dict[str, Any]) -> None:
    result = answers["no tool"]
    assert result.is_error and "no_such_tool" in result.content[0].text
