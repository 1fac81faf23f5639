"""``fit --json`` (schema vramwise/fit v1, docs/json-schema.md) for every question, against app.fit's own result,
and the rounding of context answers (a multiple of 256, the step beyond it a miss)."""

from __future__ import annotations

import json

import pytest
from cli_run import run

from vramwise.app.fitting import FitRequest, Question, fit
from vramwise.app.run import InferRequest, TrainRequest, infer, train
from vramwise.catalog import get_gpu


def _doc(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    assert not err, err
    return code, json.loads(out)


@pytest.mark.parametrize(
    ("argv", "question"),
    [
        (("fit", "llama-3-8b", "--gpu", "rtx-4090", "--peft", "lora", "--recompute", "full", "--max", "batch"),
         "max batch"),
        (("fit", "llama-2-7b", "--gpu", "a100-80gb", "--peft", "lora", "--max", "seq"), "max seq"),
        (("fit", "llama-2-7b", "--gpu", "l4", "--infer", "--max", "context"), "max context"),
        (("fit", "llama-3.1-8b", "--gpu", "rtx-3090", "--infer", "--max", "context", "--serve"), "max context"),
        (("fit", "llama-2-70b", "--gpu", "a100-80gb", "--min-gpus", "--recompute", "full"), "min_gpus"),
        (("fit", "llama-3.1-70b", "--gpu", "h100-80gb", "--best-format", "--infer", "--seq", "8192"), "best_format"),
        (("fit", "llama-2-7b", "--gpu", "a100-40gb", "--layouts", "8", "--top", "3"), "layouts"),
    ],
)
def test_every_answer_in_json(argv: tuple[str, ...], question: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _doc(capsys, *argv)
    assert code == 0 and doc["schema"] == "vramwise/fit" and doc["version"] == 1 and doc["question"] == question
    assert doc["fits"] is True and doc["reason"] is None and doc["assumptions"]
    gpu = get_gpu(doc["gpu"]["name"])
    assert doc["gpu"]["memory_bytes"] == gpu.memory_bytes == doc["gpu"]["budget_bytes"]  # no margin
    if question == "layouts":
        assert len(doc["layouts"]["fitting"]) <= 3 and doc["answer"] is None
        assert all(x["peak"] <= gpu.memory_bytes for x in doc["layouts"]["fitting"])
        return
    a = doc["answer"]
    assert a["headroom_bytes"] == a["budget_bytes"] - a["peak_bytes"] >= 0
    if question == "best_format":
        assert doc["formats"][0]["format"] == "bf16" and a["value"] in [f["format"] for f in doc["formats"]]
    if question in ("max seq", "max context"):
        assert a["value"] % 256 == 0 and "the answer rounded down to a multiple of 256" in doc["assumptions"]


def test_json_answer_is_app_fit_answer(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = _doc(capsys, "fit", "llama-3-8b", "--gpu", "rtx-4090", "--peft", "lora", "--recompute", "full",
                  "--max", "batch", "--margin", "0.05")
    r = fit(FitRequest(model="llama-3-8b", gpu="rtx-4090", question=Question.MAX, target="batch",
                       options={"peft": "lora", "recompute": "full"}, margin=0.05))
    assert r.answer is not None and doc["answer"]["value"] == r.answer.value
    assert doc["answer"]["peak_bytes"] == r.answer.at.peak_bytes
    total = get_gpu("rtx-4090").memory_bytes
    assert doc["gpu"]["budget_bytes"] == int(total * 0.95) == doc["answer"]["budget_bytes"]  # 5% kept free
    # one micro-batch more misses the budget less the margin: the same question asked through train
    nxt = train(TrainRequest(model="llama-3-8b", gpu="rtx-4090", margin=0.05,
                             options={"peft": "lora", "recompute": "full", "batch": int(r.answer.value) + 1}))
    assert nxt.stages[0].verdict is not None and not nxt.stages[0].verdict.fits


def test_context_answer_rounded_and_the_next_step_misses(capsys: pytest.CaptureFixture[str]) -> None:
    """The trial's 33,712-token answer at 0.00 GiB headroom: now a multiple of 256, and 256 more does not fit."""
    _, doc = _doc(capsys, "fit", "llama-3.1-8b", "--gpu", "rtx-4090", "--infer", "--max", "context")
    n = doc["answer"]["value"]
    assert n % 256 == 0 and doc["answer"]["next_value"] == n + 256
    at = infer(InferRequest(model="llama-3.1-8b", gpu="rtx-4090", options={"context": n}))
    beyond = infer(InferRequest(model="llama-3.1-8b", gpu="rtx-4090", options={"context": n + 256}))
    assert at.verdict is not None and at.verdict.fits and beyond.verdict is not None and not beyond.verdict.fits
    assert doc["answer"]["peak_bytes"] == at.verdict.peak_bytes


def test_nothing_fits_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _doc(capsys, "fit", "llama-3.1-405b", "--gpu", "t4", "--infer", "--max", "batch")
    assert code == 3 and doc["fits"] is False and doc["answer"] is None and doc["reason"]
    assert isinstance(doc["advice"], list)
    for a in doc["advice"]:
        assert a["headroom_bytes"] >= 0 and a["change"].startswith("--")


def test_margin_under_an_engine(capsys: pytest.CaptureFixture[str]) -> None:
    """llama.cpp's memory grows with -c: with --margin the largest -c is searched against the GPU less the margin
    (its plan at 256 more is over it); vLLM fills --gpu-memory-utilization of the GPU, so a margin larger than the
    share it leaves is a miss whose advice is a smaller share."""
    from vramwise.app.engines import engine_plan
    from vramwise.app.setups import infer_setup
    from vramwise.spec.load import catalog_spec

    code, doc = _doc(capsys, "fit", "llama-3.1-8b", "--gpu", "rtx-3090", "--engine", "llama.cpp", "--infer",
                     "--max", "context", "--margin", "0.1")
    budget = int(get_gpu("rtx-3090").memory_bytes * 0.9)
    n = doc["answer"]["value"]
    assert code == 0 and n % 256 == 0 and doc["answer"]["peak_bytes"] <= budget == doc["gpu"]["budget_bytes"]
    spec = catalog_spec("llama-3.1-8b")
    beyond = engine_plan(spec, infer_setup({"engine": "llama.cpp", "ctx_size": n + 256}, spec), get_gpu("rtx-3090"))
    assert beyond.estimate.peak_bytes > budget
    code, doc = _doc(capsys, "fit", "llama-3-8b", "--gpu", "h100", "--serve", "--infer", "--max", "context",
                     "--margin", "0.15")
    assert code == 3 and "--margin 15%" in doc["reason"]
    assert [a["kind"] for a in doc["advice"]] == ["gpu_util"] and doc["advice"][0]["options"]["gpu_util"] < 0.9


def test_best_format_skips_fp8_where_transformers_dequantizes_it(capsys: pytest.CaptureFixture[str]) -> None:
    """The trial's llava on a T4 was told fp8-e4m3: transformers 5.24 dequantizes fp8 to bf16 below compute
    capability 8.9 (quantizer_finegrained_fp8.py validate_environment), so it is no candidate there."""
    code, doc = _doc(capsys, "fit", "llava-1.5-7b", "--infer", "--images", "4", "--gpu", "t4", "--best-format")
    assert code == 0 and not str(doc["answer"]["value"]).startswith("fp8")
    assert all(not f["fits"] for f in doc["formats"] if f["format"].startswith("fp8"))
    assert any("fp8 formats are not candidates" in n for n in doc["notes"])
    code, doc = _doc(capsys, "fit", "llava-1.5-7b", "--infer", "--images", "4", "--gpu", "l4", "--best-format")
    assert code == 0 and not any("fp8 formats" in n for n in doc["notes"])  # an L4 is 8.9


@pytest.mark.parametrize(
    "argv",
    [
        ("fit", "llama-3-8b", "--gpu", "h100", "--serve", "--min-gpus"),
        ("fit", "llama-3-8b", "--gpu", "h100", "--engine", "vllm", "--layouts", "8"),
        ("fit", "llama-3-8b", "--gpu", "h100", "--engine", "llama.cpp", "--max", "batch"),
    ],
)
def test_an_engine_says_which_questions_it_cannot_answer(argv: tuple[str, ...],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`fit --serve --min-gpus` answered a training question and ignored --serve; an engine answers fit --infer only,
    and says so in one line (trial finding 4)."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert "answers fit --infer" in err and "--min-gpus and --layouts are training questions" in err
