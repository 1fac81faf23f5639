"""fit --infer under a serving engine: every column and answer is the engine's one plan (issue 13 item 2).

Before: best-format's "fits" came from transformers generate and its capacity from estimate/serving.py, so rows
read "fits yes" beside "0 sequences"; --engine was refused by fit although its --help listed the flags."""

from __future__ import annotations

import pytest

from vramwise.app.engines import engine_plan
from vramwise.app.fitting import FitRequest, Question, fit
from vramwise.app.setups import infer_setup
from vramwise.catalog import parse_gpu
from vramwise.cli import main
from vramwise.spec.load import resolve_model


def _plan(model: str, gpu: str, **options: object):
    return engine_plan(resolve_model(model), infer_setup(options, resolve_model(model)), parse_gpu(gpu).gpu)


def test_best_format_under_vllm_never_reads_fits_beside_a_refusal() -> None:
    r = fit(FitRequest(model="qwen3-30b-a3b", gpu="rtx-4090", question=Question.BEST_FORMAT, infer=True,
                       options={"context": 32768}, serve=True))
    assert r.formats
    for row in r.formats:
        assert row.plan is not None or row.refused
        if row.plan is not None:
            assert row.fits == (row.plan.refusal is None and row.plan.estimate.peak_bytes <= r.gpu.memory_bytes)
            if row.fits:
                assert (row.plan.max_sequences or 0) >= 1  # a fitting row serves at least one sequence
    best = next(row for row in r.formats if row.fits)
    assert r.answer is not None and r.answer.value == best.format


def test_best_format_with_transformers_has_no_capacity_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "llama-3-8b", "--gpu", "rtx-4090", "--infer", "--best-format"]) == 0
    out = capsys.readouterr().out
    assert "fits (transformers generate" in out and "sequence" not in out.split("format ")[-1]


def test_max_context_under_vllm_is_the_largest_max_model_len_of_the_plan() -> None:
    r = fit(FitRequest(model="llama-3.1-8b", gpu="rtx-3090", question=Question.MAX, target="context", infer=True,
                       options={"engine": "vllm"}))
    plan = _plan("llama-3.1-8b", "rtx-3090", engine="vllm")
    assert plan.max_context is not None
    # rounded down to a multiple of 256 (app/fit_words.py), and shown as the plan started with it
    assert r.answer is not None and r.answer.value == plan.max_context // 256 * 256
    assert plan.refusal is not None  # the model's 131,072 does not fit: the answer is what to pass instead
    at = _plan("llama-3.1-8b", "rtx-3090", engine="vllm", max_model_len=int(r.answer.value))
    assert at.refusal is None and r.answer.at.peak_bytes == at.estimate.peak_bytes


def test_max_batch_under_vllm_is_the_plans_concurrency() -> None:
    options = {"engine": "vllm", "context": 4096, "max_model_len": 8192}
    r = fit(FitRequest(model="llama-3.1-8b", gpu="rtx-3090", question=Question.MAX, target="batch", infer=True,
                       options=options))
    plan = _plan("llama-3.1-8b", "rtx-3090", **options)
    assert plan.kv_tokens is not None
    # by hand: a sequence of 4,096 tokens (+ new tokens) takes whole blocks of 16 tokens of the pool
    per_seq = -(-plan.sequence_tokens // 16) * 16
    assert r.answer is not None and r.answer.value == plan.max_sequences == plan.kv_tokens // per_seq


def test_max_batch_under_vllm_that_refuses_says_which_max_model_len_fits(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fit", "llama-3.1-8b", "--gpu", "rtx-3090", "--infer", "--max", "batch", "--serve", "-s", "4096"])
    first = capsys.readouterr().out.splitlines()[0]  # exit 3: the reason's one line, then the advice
    largest = _plan("llama-3.1-8b", "rtx-3090", engine="vllm", context=4096).max_context
    assert code == 3 and largest
    assert "--max-model-len" in first and f"{largest:,}" in first


def test_max_context_under_llama_cpp_shows_the_plan_at_that_c() -> None:
    r = fit(FitRequest(model="llama-3.1-8b", gpu="rtx-3090", question=Question.MAX, target="context", infer=True,
                       options={"engine": "llama.cpp"}))
    assert r.answer is not None
    at = _plan("llama-3.1-8b", "rtx-3090", engine="llama.cpp", ctx_size=int(r.answer.value))
    assert r.answer.at.peak_bytes == at.estimate.peak_bytes <= r.gpu.memory_bytes


def test_plot_help_lists_no_engine_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    out = capsys.readouterr().out
    assert "--engine" not in out and "--max-model-len" not in out and "--serve" not in out


def test_gpu_util_without_an_engine_is_refused_in_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fit", "llama-3-8b", "--gpu", "l4", "--infer", "--best-format", "--gpu-util", "0.8"])
    assert code == 2 and "serving engine" in capsys.readouterr().err


def test_engine_title_names_the_served_length_and_the_refusal_says_what_to_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["infer", "llama-3.1-8b", "--gpu", "rtx-3090", "--engine", "vllm", "--max-model-len", "16384"]) == 0
    assert "max_model_len 16,384," in capsys.readouterr().out.splitlines()[0]
    main(["infer", "llama-3.1-8b", "--gpu", "rtx-3090", "-s", "20000", "--serve"])
    out = capsys.readouterr().out
    largest = _plan("llama-3.1-8b", "rtx-3090", engine="vllm", context=20000).max_context
    assert "max_model_len 131,072," in out.splitlines()[0]  # the model's max_position_embeddings, vLLM's default
    assert f"--max-model-len {largest} or less" in out


def test_best_format_row_is_what_infer_serve_prints_for_that_format() -> None:
    """The trial's qwen2.5-72b awq tp2 32k: fit's row (329,296 KV tokens, the old rule) and infer --serve (331,392)
    disagreed; both now read the one vLLM plan."""
    from vramwise.app.run import InferRequest, infer

    r = fit(FitRequest(model="qwen2.5-72b", gpu="2xh100", question=Question.BEST_FORMAT, infer=True,
                       options={"context": 32768}, serve=True))
    row = next(x for x in r.formats if x.format == "awq-4bit-g128")
    served = infer(InferRequest(model="qwen2.5-72b", gpu="2xh100", serve=True,
                                options={"context": 32768, "format": "awq-4bit-g128"}))
    assert row.plan is not None and served.engine is not None and served.capacity is not None
    assert (row.plan.kv_tokens, row.plan.max_sequences) == (served.engine.kv_tokens, served.engine.max_sequences)
    assert row.plan.max_sequences == served.capacity.max_sequences and row.fits == served.verdict.fits
