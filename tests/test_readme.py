"""The README's examples run: every ``$ vramwise ...`` block prints what the README shows, and the Python API works.

The oracle is the code itself: this test keeps the README in step with the CLI (the README's ``--serve`` example had
drifted to "56.34 GiB = 1,054,896 tokens" while the code printed "56.23 GiB = 1,052,848 tokens"; this test would have
failed on that line, see ``test_the_matcher_catches_the_serve_drift``). The Python block's printed comments
(46,702,792,704 and 12,879,925,248, Mixtral's total and active parameters) are independent numbers: they equal
transformers' meta-device counts (tests/spec/test_params_vs_transformers.py).

Elision in a README block: a line ``...`` stands for any number of lines (zero included); a line ending in `` ...``
stands for that line's beginning followed by anything.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import os
import re
import shlex
from pathlib import Path

import pytest

from vramwise.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```[a-z]*\n(.*?)^```$", re.S | re.M)
# `verify` traces the real transformers model (torch, about 20 s on two busy cores): opt in with this variable.
SLOW_ENV = "VRAMWISE_README_SLOW"


def _cli_blocks() -> list[tuple[str, list[str]]]:
    blocks = []
    for body in BLOCK.findall(README.read_text()):
        lines = body.rstrip("\n").split("\n")
        if lines[0].startswith("$ vramwise "):
            blocks.append((lines[0][2:], lines[1:]))
    return blocks


def _pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        elif line.endswith(" ..."):
            parts.append(re.escape(line[: -len("...")]) + r"[^\n]*\n")
        else:
            parts.append(re.escape(line) + r"\n")
    return re.compile("".join(parts))


def _matches(expected: list[str], actual: str) -> bool:
    return _pattern(expected).fullmatch(actual) is not None


def _run(command: str) -> str:
    argv = shlex.split(command)[1:]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code in (0, 3), f"{command} exited {code}"  # 3: an example that does not fit (the CI gate's status)
    return out.getvalue()


CLI_BLOCKS = _cli_blocks()


def test_the_readme_has_cli_examples() -> None:
    # Vacuity guard: a change to the fence style must not make every example silently disappear.
    commands = [c.split()[1] for c, _ in CLI_BLOCKS]
    assert len(CLI_BLOCKS) >= 7 and {"infer", "train", "fit", "verify"} <= set(commands), commands


@pytest.mark.parametrize(("command", "expected"), CLI_BLOCKS, ids=[c for c, _ in CLI_BLOCKS])
def test_readme_example_prints_what_the_readme_shows(command: str, expected: list[str]) -> None:
    if command.split()[1] == "verify":
        if importlib.util.find_spec("torch") is None:
            pytest.skip("verify needs torch (extra `verify`)")
        if not os.environ.get(SLOW_ENV):
            pytest.skip(f"verify traces a full 7B step (about 20 s): set {SLOW_ENV}=1 to run this README example")
    actual = _run(command)
    diff = "\n".join(difflib.unified_diff(expected, actual.splitlines(), "README.md", "actual", lineterm=""))
    assert _matches(expected, actual), f"README example `{command}` drifted:\n{diff}"


def test_the_matcher_catches_the_serve_drift() -> None:
    # The README once showed the first line below while the code printed the second: the matcher must tell them apart.
    rest = " tokens of KV (57,344 B/token); 128 concurrent sequences of 8,192 tokens"
    drifted = "serving: KV budget 56.34 GiB = 1,054,896" + rest
    printed = "serving: KV budget 56.23 GiB = 1,052,848" + rest
    output = f"title\n{printed}\n(units: 1 GiB = 2^30 bytes)\n"
    assert _matches(["...", printed, "..."], output)
    assert not _matches(["...", drifted, "..."], output)
    assert _matches(["title", "serving: KV budget ...", "..."], output)
    assert not _matches(["title", "serving: KV budget 56.34 ...", "..."], output)
    assert not _matches([printed], output)  # no implicit elision at either end


def _python_block() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.S | re.M)
    assert len(blocks) == 1, "the README has one Python API block"
    return blocks[0]


def test_readme_python_api_runs_and_prints_its_comments() -> None:
    source = _python_block()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md:python", "exec"), {})
    printed = out.getvalue().splitlines()
    prints = [line for line in source.splitlines() if line.startswith("print(")]
    assert len(printed) == len(prints), printed
    checked = 0
    for call, line in zip(prints, printed, strict=True):
        if "#" not in call:
            continue
        comment = call.split("#", 1)[1].strip()
        numbers = [int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+", comment)]
        if numbers:
            assert [int(w) for w in line.split()] == numbers, (call, line)
        else:
            assert line == comment, (call, line)
        checked += 1
    assert checked == 2  # the parameter counts and the `True` of the fast path
