"""Regressions of the review of this session's features (--range/--max-seq, the Ollama table, the rope table, the
MCP tools, llama.cpp's flags), each as the smallest reproducer that broke. The oracle is the project's rule for bad
input (errors.py): exit status 2, one stderr line naming the field, nothing on stdout, no traceback."""

from __future__ import annotations

import pytest

from reliability.conftest import run_cli

HUGE = "9" * 29  # past any C int


@pytest.mark.parametrize(
    ("flag", "field"),
    [("--ctx-size", "-c/--ctx-size"), ("--parallel", "-np/--parallel"), ("--batch-size", "-b/--batch-size"),
     ("--ubatch-size", "-ub/--ubatch-size"), ("--n-gpu-layers", "-ngl/--n-gpu-layers")],
)
def test_llamacpp_integer_flags_stop_at_a_c_int(flag: str, field: str, capsys: pytest.CaptureFixture[str]) -> None:
    # `-np 10^29` exited 3 with float-rounded KV bytes ("13,421,772,799,...,865,782,272"); `-ub 10^31` exited 0.
    # llama.cpp's own parser (common/arg.cpp std::stoi) refuses anything past INT_MAX
    rc, out, err = run_cli(["infer", "llama-3.1-8b", "--engine", "llama.cpp", "--gpu", "4090", flag, HUGE], capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert field in err and "2,147,483,647" in err, err
    # INT_MAX itself is llama.cpp's to take: an answer (fits or not), not a refusal
    rc, _out, err = run_cli(["infer", "llama-3.1-8b", "--engine", "llama.cpp", "--gpu", "4090", flag, str(2**31 - 1)],
                            capsys)
    assert rc in (0, 3), err
