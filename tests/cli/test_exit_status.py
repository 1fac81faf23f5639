"""The exit status as a CI gate (cli/__init__.py): 0 fits, 3 does not fit, 2 bad input; and --margin.

Oracles: the verdict of the same question asked through the application layer, and the margin's arithmetic
written out by hand (the budget is the CUDA total x (1 - F), rounded down).
"""

from __future__ import annotations

import json

import pytest
from cli_run import run

from vramwise.app.run import InferRequest, infer
from vramwise.catalog import get_gpu


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (("infer", "llama-3-8b", "--gpu", "h100"), 0),
        (("infer", "llama-3-8b"), 0),  # no GPU to check: nothing to fail
        (("infer", "llama-3.1-8b", "-s", "131072", "--gpu", "rtx-4090"), 3),
        (("infer", "gemma-2-9b", "--gpu", "l4", "--engine", "vllm"), 3),  # the engine refuses to start
        (("infer", "llama-3-8b", "--gpu", "rtx-4090", "--json"), 0),
        (("train", "llama-3-8b", "--gpu", "rtx-4090"), 3),
        (("train", "llama-3-8b", "--gpu", "rtx-4090", "--json"), 3),
        (("train", "llama-3.2-1b", "--gpu", "h100"), 0),
        (("train", "llama-2-7b", "--pp", "2", "--per-stage", "--gpu", "rtx-4090"), 3),
        (("fit", "llama-3-8b", "--gpu", "rtx-4090", "--peft", "lora", "--recompute", "full", "--max", "batch"), 0),
        (("fit", "llama-3.2-1b", "--gpu", "rtx-3090", "--max", "batch"), 3),  # nothing fits
        (("fit", "llama-3.1-405b", "--gpu", "t4", "--infer", "--best-format"), 3),
        (("infer", "llama-3-8b", "--gpu", "nosuchgpu"), 2),  # bad input keeps its status
        (("train", "llama-3-8b", "--zero", "3"), 2),  # dp must be >= 2
        (("fit", "llama-3-8b", "--gpu", "h100", "--max", "tokens"), 2),  # argparse
        (("infer", "llama-3-8b", "--gpu", "h100", "--margin", "1"), 2),
        (("infer", "llama-3-8b", "--gpu", "h100", "--margin", "-0.1"), 2),
        (("infer", "llama-3-8b", "--gpu", "h100", "--margin", "nan"), 2),
        (("train", "llama-3-8b", "--margin", "0.1"), 2),  # no GPU to keep free
    ],
)
def test_exit_status(argv: tuple[str, ...], status: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == status, (argv, out[-500:], err)
    if status == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if status == 3 and "--json" not in argv:
        assert "DOES NOT FIT" in out and ("to make it fit" in out or "no single change" in out)


def test_exit_status_agrees_with_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    for ctx in (8192, 65536):
        r = infer(InferRequest(model="llama-3.1-8b", gpu="rtx-4090", options={"context": ctx}))
        assert r.verdict is not None
        code, _, _ = run(capsys, "infer", "llama-3.1-8b", "-s", str(ctx), "--gpu", "rtx-4090")
        assert code == (0 if r.verdict.fits else 3)


def test_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("infer", "train", "fit"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "exit status: 0 fits" in out and "3 does not fit" in out and "2 bad input" in out


def test_margin_keeps_a_fraction_free(capsys: pytest.CaptureFixture[str]) -> None:
    """llama-3-8b at 2,048 tokens on an RTX 4090: it fits; keep free just more than its headroom and it does not."""
    gpu = get_gpu("rtx-4090")
    r = infer(InferRequest(model="llama-3-8b", gpu="rtx-4090"))
    assert r.verdict is not None and r.verdict.fits
    peak, total = r.verdict.peak_bytes, gpu.memory_bytes
    fits_margin = round((total - peak) / total - 0.005, 3)  # keeps a little less than the headroom free
    misses_margin = round((total - peak) / total + 0.005, 3)
    code, out, _ = run(capsys, "infer", "llama-3-8b", "--gpu", "rtx-4090", "--margin", str(fits_margin), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["gpu"]["budget_bytes"] == int(total * (1 - fits_margin))
    assert doc["gpu"]["headroom_bytes"] == int(total * (1 - fits_margin)) - peak >= 0
    code, out, _ = run(capsys, "infer", "llama-3-8b", "--gpu", "rtx-4090", "--margin", str(misses_margin))
    assert code == 3 and f"margin {misses_margin:.0%} kept free" in out and "DOES NOT FIT" in out
