"""Regressions of the second review's findings (SGLang's context cap, --range rows that cannot move, messages that
name a preset, Ollama references, the digit count of a huge number, a JSON model that is a number). The oracle is the
project's rule for bad input (errors.py): exit status 2, one stderr line naming the field, nothing on stdout, no
traceback; and for SGLang, its own request check (tokenizer_manager.py _validate_one_request)."""

from __future__ import annotations

import json

import pytest

from reliability.conftest import run_cli


def _one_line_refusal(rc: int, out: str, err: str) -> None:
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_sglang_refuses_a_request_past_its_context_length(capsys: pytest.CaptureFixture[str]) -> None:
    # `--context-length 100 --context 2048` was an answer with "0 concurrent sequences" and exit 0, where SGLang
    # refuses the request ("The input (N tokens) is longer than the model's context length", TokenizerManager.
    # _validate_one_request) and vLLM's plan refuses the same thing under --max-model-len
    base = ["infer", "llama-3-8b", "--engine", "sglang", "--gpu", "h100"]
    rc, out, err = run_cli([*base, "--context-length", "100", "--context", "2048"], capsys)
    _one_line_refusal(rc, out, err)
    assert "--context-length" in err and "2,048" in err and "100" in err, err
    # at the cap itself: an answer
    rc, _out, err = run_cli([*base, "--context-length", "2048", "--context", "2048"], capsys)
    assert rc in (0, 3), err
    # --range --max-seq past the cap: said in one line, as for vLLM's --max-model-len
    rc, out, err = run_cli([*base, "--context-length", "4096", "--context", "2048", "--range", "--max-seq", "8192"],
                           capsys)
    _one_line_refusal(rc, out, err)
    assert "--max-seq" in err and "4,096" in err, err


def test_sglang_range_stops_at_its_context_length(capsys: pytest.CaptureFixture[str]) -> None:
    # without --max-seq the range's longest sequence is SGLang's --context-length, not the model's 8,192 positions
    argv = ["infer", "llama-3-8b", "--engine", "sglang", "--gpu", "h100", "--context-length", "4096", "--context",
            "2048", "--range", "--json"]
    rc, out, err = run_cli(argv, capsys)
    assert rc in (0, 3), err
    assert "4096" in out.replace(",", "") and "8192" not in json.dumps(json.loads(out).get("range", {})), out[:2000]
