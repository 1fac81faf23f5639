"""Golden outputs of every renderer, reached through the CLI entry point (``vramwise.cli.main``).

These files pin FORMATTING only: column widths, headers, separators, the order of terms and phases, notes and
footers. The numbers in them are the code's own output at the time they were recorded, so they are not oracles;
the numbers are checked against independent oracles (transformers' parameter counts, traced steps, published
tables, hand arithmetic) in tests/spec, tests/estimate and tests/fit. A golden diff that changes a number is a
number change and must be explained there first.

To accept an intended formatting change: ``pytest tests/report --update-golden``, then review ``git diff tests/golden``.
The CLI is called in-process through ``vramwise.cli.main`` so that the goldens survive a refactor of its internals.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from vramwise.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

# name -> argv. One case per renderer and per mode of each renderer; the models vary so that MoE, GQA, a bare size
# and an untied head all appear somewhere.
CASES: dict[str, tuple[str, ...]] = {
    "infer_table": ("infer", "llama-3-8b", "--context", "8192", "--gpu", "rtx-4090"),
    "infer_table_gb_tp": ("infer", "mixtral-8x7b", "--tp", "2", "-b", "4", "--units", "gb", "--gpu", "h100-80gb"),
    "infer_explain": ("infer", "llama-2-7b", "--context", "4096", "-n", "256", "--explain"),
    "infer_json": ("infer", "qwen3-30b-a3b", "-b", "2", "--context", "4096", "--gpu", "a100-80gb", "--json"),
    "infer_serve": ("infer", "qwen2-7b", "--context", "8192", "--gpu", "a100-80gb", "--serve"),
    "infer_serve_json": ("infer", "llama-3-8b", "--gpu", "l40s", "--serve", "--json"),
    "infer_engine_refused": ("infer", "gemma-2-9b", "--gpu", "l4", "--engine", "vllm", "--explain"),
    "infer_engine_tp": ("infer", "mixtral-8x7b", "--gpu", "2xh100", "--engine", "vllm", "--enforce-eager"),
    "infer_engine_llamacpp": ("infer", "llama-3-8b", "--gpu", "2x4090", "--engine", "llama.cpp", "-f", "q4_k_m",
                              "-c", "16384", "-fa", "off", "-ts", "3,1", "--explain"),
    "infer_textbook": ("infer", "14b", "--mode", "textbook", "--format", "fp32", "--units", "gb"),
    "infer_textbook_arch": ("infer", "llama-2-7b", "--mode", "textbook", "--context", "4096"),
    "train_table": (
        "train", "llama-3-8b", "--peft", "lora", "--lora-targets", "all-linear", "--recompute", "full",
        "--seq", "4096", "--gpu", "rtx-4090",
    ),
    "train_explain": ("train", "llama-2-7b", "--dp", "8", "--zero", "3", "--recompute", "full", "--explain"),
    "train_fsdp_offload": (
        "train", "mistral-7b", "--dp", "4", "--fsdp", "full", "--offload", "optimizer", "--gpu", "a100-40gb",
    ),
    "train_per_stage": ("train", "llama-2-7b", "--tp", "2", "--pp", "4", "--grad-accum", "8", "--per-stage"),
    "train_json": ("train", "mixtral-8x7b", "--dp", "8", "--zero", "2", "--ep", "8", "--seq", "4096", "--json"),
    "train_json_per_stage": ("train", "llama-2-7b", "--pp", "2", "--grad-accum", "4", "--per-stage", "--json"),
    "train_textbook_000": (
        "train", "qwen1.5-7b", "--mode", "textbook", "--seed", "000", "--peft", "lora", "--recompute", "full",
    ),
    "train_textbook_002": (
        "train", "llama-2-70b", "--mode", "textbook", "--seed", "002", "--dp", "4", "--zero", "1",
        "--tp", "8", "--sp", "--pp", "2", "--grad-accum", "8", "--explain",
    ),
    "fit_max_batch": (
        "fit", "llama-3-8b", "--gpu", "rtx-4090", "--peft", "lora", "--recompute", "full", "--max", "batch",
    ),
    "fit_max_seq": ("fit", "llama-2-7b", "--gpu", "a100-80gb", "--peft", "lora", "--max", "seq"),
    "fit_infer_max_batch": ("fit", "llama-3-8b", "--gpu", "rtx-4090", "--infer", "--seq", "8192", "--max", "batch"),
    "fit_infer_max_seq": ("fit", "llama-2-7b", "--gpu", "l4", "--infer", "--max", "seq"),
    "fit_min_gpus": ("fit", "llama-2-70b", "--gpu", "a100-80gb", "--min-gpus"),
    "fit_best_format": ("fit", "llama-3.1-70b", "--gpu", "h100-80gb", "--best-format", "--infer", "--seq", "8192"),
    "fit_layouts": ("fit", "llama-2-7b", "--gpu", "a100-40gb", "--layouts", "8", "--max-batch", "2", "--top", "5"),
    "models": ("models",),
    "gpus": ("gpus",),
    "formats": ("formats",),
}


def _run(argv: tuple[str, ...]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    # 3: the setup does not fit its --gpu (the CI gate's status, cli/__init__.py); the output is still the table
    assert code in (0, 3), f"vramwise {' '.join(argv)} exited {code}"
    return out.getvalue()


def _check(name: str, actual: str, update: bool) -> None:
    path = GOLDEN / f"{name}.txt"
    if update:
        path.write_text(actual)
        return
    assert path.exists(), f"{path} missing: record it with `pytest tests/report --update-golden`"
    expected = path.read_text()
    assert actual == expected, f"{name}: output differs from {path.name} (if intended: --update-golden, review diff)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_output_matches_golden(name: str, update_golden: bool) -> None:
    _check(name, _run(CASES[name]), update_golden)


def test_verify_comparison_table_matches_golden(update_golden: bool) -> None:
    # A hand-built Comparison, so no torch trace is needed: this pins the renderer, not the measurement.
    try:
        from vramwise.verify.compare import Comparison, Row  # where the review proposes moving the result types
    except ImportError:
        from vramwise.verify.twin import Comparison, Row
    from vramwise.report.verify_out import render_comparison

    rows = (
        Row(name="weights", estimate=13_476_831_232, measured=13_476_831_232),
        Row(name="gradients", estimate=13_476_831_232, measured=13_476_831_232),
        Row(name="backward_peak", estimate=107_814_649_856, measured=107_831_594_496),
        Row(name="peak", estimate=134_768_312_320, measured=0),  # nothing measured: the error column stays blank
    )
    plain = Comparison(
        kind="training", rows=rows, semantics="fake CPU tensors (FakeTensorMode)", layers_traced=2,
        overheads=4_586_471_424, seconds=5.07,
    )
    cuda = Comparison(
        kind="inference", rows=rows[:2], semantics="CUDA", layers_traced=None, overheads=1_000_000_000,
        seconds=0.5, full_estimate=30_000_000_000,
        cuda={"max_memory_allocated": 27_000_000_000, "max_memory_reserved": 28_000_000_000,
              "device_used": 29_000_000_000, "device_total": 80_000_000_000},
    )
    text = "\n\n".join(
        [
            render_comparison(plain, title="vramwise verify llama-2-7b (hand-built rows)"),
            render_comparison(cuda, title="vramwise verify --infer (hand-built rows, GB)", unit="gb"),
        ]
    )
    _check("verify_comparison", text + "\n", update_golden)
