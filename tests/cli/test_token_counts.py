"""Token counts as vLLM reads them (trial finding 12: `-s 128k` was "invalid int value").

Oracle: vLLM 0.11 vllm/engine/arg_utils.py human_readable_int's own docstring examples ('1k' -> 1,000,
'1K' -> 1,024, '25.6k' -> 25,600) and its refusal of decimals with a binary suffix.
"""

from __future__ import annotations

import argparse

import pytest
from cli_run import run

from vramwise.cli.options import tokens


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1k", 1000), ("1K", 1024), ("25.6k", 25_600), ("128k", 128_000), ("128K", 131_072), ("4096", 4096),
        ("1M", 1 << 20),
    ],
)
def test_vllm_suffixes(text: str, count: int) -> None:
    assert tokens(text) == count


@pytest.mark.parametrize("text", ["1.5K", "abc", "12kk", "-"])
def test_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        tokens(text)


def test_every_context_option_takes_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "infer", "llama-3.1-8b", "-s", "128K", "--json")
    assert code == 0 and '"context": 131072' in out
    argv = ("fit", "llama-2-7b", "--gpu", "a100-80gb", "--seq", "4k", "--peft", "lora", "--max", "batch")
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "seq 4,000" in out
    code, _, err = run(capsys, "infer", "llama-3.1-8b", "-s", "1.5K")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "1.5k?" in err
