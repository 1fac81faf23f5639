"""Findings of the post-merge review (issue 14/15 merges), each pinned by the command an engineer typed."""

from __future__ import annotations

import re

import pytest
from cli_run import run


def test_deepspeed_layouts_skip_zero_2_3_with_pipeline_stages(capsys: pytest.CaptureFixture[str]) -> None:
    """fit --layouts --framework deepspeed used to stop at the first pp > 1 ZeRO-2 candidate with the framework's
    refusal (exit 2); a layout DeepSpeed does not run (runtime/pipe/engine.py: ZeRO-2/3 with pp) is no candidate."""
    code, out, err = run(capsys, "fit", "llama-3.1-8b", "--gpu", "h100", "--layouts", "8", "--framework", "deepspeed",
                         "--top", "500")  # fmt: skip
    assert code == 0, err
    rows = re.findall(r"tp=\d+ pp=(\d+) dp=\d+(?: zero=(\d))?", out)
    assert rows
    assert all(int(pp) == 1 or int(zero or 0) <= 1 for pp, zero in rows)
    assert any(int(pp) > 1 for pp, _ in rows)  # pipeline layouts stay, at ZeRO 0-1
