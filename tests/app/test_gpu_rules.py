"""What ``--gpu`` does to a question: the budget it checks, the count's layout, and fp16 rules without bf16.

Oracles: arithmetic written out here (the published CUDA total in bytes, minus the peak), the same estimate asked
for without ``--gpu`` but with the layout the count implies (the count must add nothing else), and the recipe
table (bf16-mixed and fp16-mixed keep the same bytes, so only the names and the warning change).
"""

from __future__ import annotations

import json

import pytest

from vramwise.app import FitRequest, InferRequest, Question, TrainRequest, fit, infer, train
from vramwise.cli import main
from vramwise.errors import InvalidLayoutError, InvalidWorkloadError, VramwiseError

MODEL = "llama-3-8b"


def test_verdict_uses_the_cuda_visible_total() -> None:
    r = infer(InferRequest(model=MODEL, options={"context": 8192}, gpu="rtx-4090"))
    assert r.verdict is not None
    # torch's "total capacity of 23.64 GiB": 23.64 x 1,073,741,824 = 25,383,256,719.36 -> 25,383,256,719 B,
    # not nvidia-smi's 24,564 MiB = 25,757,220,864 B
    assert r.verdict.gpu.memory_bytes == 25_383_256_719
    assert r.verdict.gpu.smi_bytes == 25_757_220_864
    assert r.verdict.headroom_bytes == 25_383_256_719 - r.estimate.peak_bytes


def test_inference_count_is_tensor_parallel_over_all_gpus() -> None:
    counted = infer(InferRequest(model=MODEL, gpu="2x4090"))
    plain = infer(InferRequest(model=MODEL, options={"tp": 2}, gpu="rtx-4090"))
    assert counted.setup.tp == 2 and counted.verdict is not None and counted.verdict.count == 2
    assert counted.estimate.peak_bytes == plain.estimate.peak_bytes
    assert any("tp = 2" in n for n in counted.estimate.notes)
    assert infer(InferRequest(model=MODEL, options={"tp": 2}, gpu="2x4090")).setup.tp == 2
    with pytest.raises(InvalidLayoutError, match=r"tp\(4\) != gpus\(2\)") as err:
        infer(InferRequest(model=MODEL, options={"tp": 4}, gpu="2x4090"))
    assert err.value.field == "tp"


def test_training_count_fills_dp_or_must_equal_the_product() -> None:
    r = train(TrainRequest(model=MODEL, options={"tp": 2, "zero": 3}, gpu="8xH100"))
    assert (r.setup.parallel.dp, r.setup.parallel.tp) == (4, 2)  # dp = 8 / (tp 2 x pp 1 x cp 1)
    plain = train(TrainRequest(model=MODEL, options={"tp": 2, "dp": 4, "zero": 3}, gpu="h100"))
    assert r.stages[0].estimate.peak_bytes == plain.stages[0].estimate.peak_bytes
    assert train(TrainRequest(model=MODEL, options={"dp": 4, "tp": 2}, gpu="8xH100")).setup.parallel.gpus == 8
    with pytest.raises(InvalidLayoutError, match=r"dp\(2\) \* tp\(2\) \* pp\(1\) \* cp\(1\) = 4 != gpus\(8\)"):
        train(TrainRequest(model=MODEL, options={"dp": 2, "tp": 2}, gpu="8xH100"))
    with pytest.raises(InvalidLayoutError, match=r"= 3 does not divide gpus\(8\)"):
        train(TrainRequest(model=MODEL, options={"tp": 3}, gpu="8xH100"))


def test_fit_counts() -> None:
    found = fit(FitRequest(model=MODEL, gpu="8xa100", question=Question.LAYOUTS, top=1))
    assert found.gpus == 8  # --layouts from the count
    with pytest.raises(InvalidLayoutError, match="two GPU counts"):
        fit(FitRequest(model=MODEL, gpu="8xa100", question=Question.LAYOUTS, gpus=4))
    with pytest.raises(VramwiseError, match="--min-gpus searches the number of GPUs"):
        fit(FitRequest(model=MODEL, gpu="8xa100", question=Question.MIN_GPUS))
    ask = {"question": Question.MAX, "target": "batch", "infer": True}
    counted = fit(FitRequest(model=MODEL, gpu="2x4090", **ask))  # type: ignore[arg-type]
    plain = fit(FitRequest(model=MODEL, gpu="4090", options={"tp": 2}, **ask))  # type: ignore[arg-type]
    assert counted.answer is not None and plain.answer is not None
    assert counted.answer.value == plain.answer.value and counted.count == 2


def test_no_bf16_gpu_gets_fp16_rules_and_a_warning() -> None:
    r = infer(InferRequest(model=MODEL, gpu="t4"))
    assert r.setup.weight_format == "fp16"
    assert any(n.startswith("WARNING: NVIDIA Tesla T4 16GB has no bf16") for n in r.estimate.notes)
    bf16 = infer(InferRequest(model=MODEL, options={"format": "bf16"}))
    assert r.estimate.peak_bytes == bf16.estimate.peak_bytes  # same bytes: only the dtype's name changes
    with pytest.raises(InvalidWorkloadError, match="--format bf16") as err:
        infer(InferRequest(model=MODEL, options={"format": "bf16"}, gpu="t4"))
    assert err.value.field == "format"
    t = train(TrainRequest(model=MODEL, options={"peft": "lora"}, gpu="v100"))
    assert str(t.setup.precision.recipe) == "fp16-mixed"
    assert any("WARNING" in n and "fp16-mixed" in n for n in t.stages[0].estimate.notes)
    fp16 = train(TrainRequest(model=MODEL, options={"peft": "lora", "precision": "fp16-mixed"}))
    assert t.stages[0].estimate.peak_bytes == fp16.stages[0].estimate.peak_bytes
    for asked in ("bf16-mixed", "bf16", "amp"):
        with pytest.raises(InvalidWorkloadError, match=f"--precision {asked} needs bf16") as err:
            train(TrainRequest(model=MODEL, options={"precision": asked}, gpu="t4"))
        assert err.value.field == "precision"
    assert not any("WARNING" in n for n in infer(InferRequest(model=MODEL, gpu="a100")).estimate.notes)


def test_a_size_is_its_own_budget() -> None:
    r = infer(InferRequest(model=MODEL, gpu="24GB"))
    assert r.verdict is not None and r.verdict.gpu.memory_bytes == 24_000_000_000
    assert any("budget: the 24GB given" in n for n in r.estimate.notes)


def test_cli_bad_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", MODEL, "--gpu", "24"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "24GiB" in err and "24GB" in err


def test_gpus_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["name", "segment", "budget", "GiB", "reported"]
    h100 = next(line for line in lines if line.startswith("h100-80gb "))
    assert "79.11 " in h100 and "79.65" in h100  # 84,943,715,696 / 2^30 and 81,559 / 1,024
    t4 = next(line for line in lines if line.startswith("t4 "))
    assert " no " in t4
    assert "*" in next(line for line in lines if line.startswith("h200 "))  # no published CUDA total
    assert main(["gpus", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["gpus"]
    assert all(r["source"].startswith("https://") and r["smi_bytes"] >= r["memory_bytes"] for r in rows)


def test_json_verdict_shows_both_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", MODEL, "--gpu", "2xh100", "--json"]) == 0
    gpu = json.loads(capsys.readouterr().out)["gpu"]
    assert (gpu["memory_bytes"], gpu["smi_bytes"], gpu["count"]) == (84_943_715_696, 85_520_809_984, 2)
    assert gpu["source"].startswith("https://") and gpu["bf16"] is True


@pytest.mark.parametrize(
    ("gpu", "says"),
    [
        ("t4", "(14.75 GiB visible to CUDA; nvidia-smi 15.00 GiB): DOES NOT FIT"),
        ("h200", "(140.40 GiB = nvidia-smi's total, CUDA's own unpublished: unconfirmed)"),
        ("h100-pcie", "(80.00 GiB nominal, no total published: unconfirmed)"),
        ("m3-max", "(96.00 GiB Metal working set, derived: unconfirmed; unified RAM 128.00 GiB)"),
        ("2x4090", "2 x NVIDIA GeForce RTX 4090 24GB (per GPU 23.64 GiB visible to CUDA; nvidia-smi 23.99 GiB)"),
        ("20GB", "a 20GB GPU (18.63 GiB, the size given)"),  # 20 x 10^9 / 2^30 = 18.626...
    ],
)
def test_verdict_line_says_what_the_budget_is(gpu: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", MODEL, "--gpu", gpu]) in (0, 3)  # 3: DOES NOT FIT (the exit status, cli/__init__.py)
    assert says in capsys.readouterr().out


def test_best_format_names_fp16_on_a_gpu_without_bf16() -> None:
    r = fit(FitRequest(model=MODEL, gpu="v100", question=Question.BEST_FORMAT, infer=True))
    assert r.answer is not None and r.answer.value == "fp16"
    assert "bf16" not in {row.format for row in r.formats} and "fp16" in {row.format for row in r.formats}
    a100 = fit(FitRequest(model=MODEL, gpu="a100", question=Question.BEST_FORMAT, infer=True)).answer
    assert a100 is not None and a100.value == "bf16"
