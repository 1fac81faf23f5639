"""Advice on a miss (app/advice.py): every suggested change, applied alone, fits; no smaller change of its kind does.

The oracle is the application layer itself asked again from here (``app.run.infer`` / ``train``) with the change
applied, independently of how advice found it, and, for numeric changes, at the next step beyond the suggestion
(one more micro-batch divisor, 256 more tokens of context, one more sequence, one fewer GPU): that step must miss.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vramwise.app.advice import (
    CONTEXT_STEP,
    FORMATS,
    FP8_COMPUTE_CC,
    GPU_COUNTS,
    SHRINKING,
    VLLM_FP8_CC,
    advise_infer,
    advise_train,
)
from vramwise.app.run import InferRequest, TrainRequest, infer, train
from vramwise.catalog import parse_gpu
from vramwise.cli import main
from vramwise.errors import VramwiseError
from vramwise.report.advice_out import Suggestion

TRAIN_KINDS = (
    "loading", "recompute", "loss", "micro_batch", "optimizer", "peft", "activation_offload", "zero", "offload", "gpus"
)
INFER_KINDS = ("prefill_chunk", "kv_dtype", "format", "context", "batch", "gpu_util", "gpu_layers", "tp")


def _train_fits(req: TrainRequest, changes: Mapping[str, Any], gpu: str | None = None) -> bool:
    try:
        r = train(replace(req, options={**req.options, **changes}, gpu=gpu or req.gpu))
    except VramwiseError:
        return False
    return all(s.verdict is not None and s.verdict.fits for s in r.stages)


def _infer_fits(req: InferRequest, changes: Mapping[str, Any], gpu: str | None = None) -> bool:
    options = {k: v for k, v in {**req.options, **changes}.items() if v is not None}
    try:
        r = infer(replace(req, options=options, gpu=gpu or req.gpu))
    except VramwiseError:
        return False
    return r.verdict is not None and r.verdict.fits


def _ranked(found: tuple[Suggestion, ...], kinds: tuple[str, ...]) -> None:
    """Cheapest first, the user's own GPUs before more GPUs: kinds in the documented order; pairs only when no
    single change fits."""
    pairs = [i for i, s in enumerate(found) if s.kind == "pair"]
    if pairs:  # only when every single change shrinks the workload or adds GPUs; before those that add GPUs
        assert all(s.kind in SHRINKING for s in found if s.kind != "pair")
        assert all(len(found[i].options) >= 2 and found[i].gpu is None for i in pairs)
        assert all(s.gpu is None for s in found[: max(pairs)])
    order = [kinds.index(s.kind) for s in found if s.kind != "pair"]
    assert order == sorted(order), [s.kind for s in found]
    assert all(s.headroom_bytes >= 0 for s in found)


def _check_train(req: TrainRequest, s: Suggestion, flat: Mapping[str, Any]) -> None:
    if s.gpu is None:
        assert _train_fits(req, s.options), s.change
    else:  # more GPUs: the data-parallel degree comes from the count
        own = replace(req, options={k: v for k, v in req.options.items() if k != "dp"})
        assert _train_fits(own, s.options, s.gpu), s.change
    if s.kind == "micro_batch":
        total = flat["batch"] * flat["grad_accum"]
        micro = s.options["batch"]
        assert micro * s.options["grad_accum"] == total and micro < flat["batch"]  # the global batch is kept
        for larger in (d for d in range(micro + 1, flat["batch"]) if total % d == 0):
            assert not _train_fits(req, {"batch": larger, "grad_accum": total // larger}), larger
    if s.kind == "recompute" and s.options["recompute"] == "full" and flat["recompute"] != "op-sac":
        assert not _train_fits(req, {"recompute": "op-sac"})  # the cheaper rebuild was tried first
    if s.kind == "optimizer":
        before = ("adamw-8bit", "paged-adamw-8bit", "paged-adamw")
        for o in before[: before.index(s.options["optimizer"])]:
            assert not _train_fits(req, {"optimizer": o}), o
    if s.kind == "gpus":
        name = parse_gpu(str(req.gpu)).gpu.name
        fewer = s.gpus - 1
        if fewer >= 2:  # one fewer data-parallel GPU misses (dp 1 shards nothing: another question)
            own = replace(req, options={k: v for k, v in req.options.items() if k != "dp"})
            assert not _train_fits(own, s.options, f"{fewer}x{name}")


def _check_infer(req: InferRequest, s: Suggestion, base: Any) -> None:
    assert _infer_fits(req, s.options, s.gpu), s.change
    if s.kind in ("context", "prefill_chunk"):
        _check_context(req, s, base)
    if s.kind == "gpu_util":  # the nearest fraction to vLLM's own that fits: one step closer to it misses
        k, now = round(s.options["gpu_util"] * 100), round(base.setup.gpu_utilization * 100)
        closer = k - 1 if k > now else k + 1
        if closer != now:
            assert not _infer_fits(req, {"gpu_util": closer / 100}), closer
    if s.kind == "gpu_layers":  # llama.cpp -ngl: one more layer on the GPU misses
        n = s.options["n_gpu_layers"]
        assert not _infer_fits(req, {"n_gpu_layers": n + 1}) or n + 1 > base.model.num_layers
    if s.kind == "batch":
        name, value = next(iter(s.options.items()))
        assert not _infer_fits(req, {name: value + 1}) or value + 1 >= base.setup.batch
    if s.kind == "tp":
        have = max(base.verdict.count, base.setup.tp)
        own = replace(req, options={k: v for k, v in req.options.items() if k != "tp"})
        name = base.gpu.name
        for n in (n for n in GPU_COUNTS if have < n < s.gpus):
            assert not _infer_fits(own, {}, f"{n}x{name}"), n
    if s.kind == "format":
        # every more faithful format the GPU runs either misses or is not smaller than the format asked
        needed = VLLM_FP8_CC if base.setup.engine == "vllm" else FP8_COMPUTE_CC
        runs = float(base.gpu.compute_capability or 0) >= needed
        for f in FORMATS[: FORMATS.index(s.options["format"])]:
            if f.startswith("fp8") and not runs:
                continue
            assert not _infer_fits(req, {"format": f}) or _peak(req, f) >= base.verdict.peak_bytes, f


def _check_context(req: InferRequest, s: Suggestion, base: Any) -> None:
    # the served length (max_model_len, --context-length, -c) or the prompt; under an engine the default request
    # may come with it (a companion "context" no longer than the served length)
    name = next(k for k in s.options if k != "context") if len(s.options) > 1 else next(iter(s.options))
    value = s.options[name]
    assert value % CONTEXT_STEP == 0
    bigger = value + CONTEXT_STEP
    step = {name: bigger}
    need = base.setup.context + base.setup.new_tokens
    if "context" in s.options and name != "context" and bigger < need:
        step["context"] = max(1, bigger - base.setup.new_tokens)
    current = base.setup.context if name in ("context", "prefill_chunk") else base.engine.context_len
    if bigger < current:
        assert not _infer_fits(req, step), step


def _peak(req: InferRequest, fmt: str) -> int:
    r = infer(replace(req, options={**req.options, "format": fmt}))
    assert r.verdict is not None
    return r.verdict.peak_bytes


_TRAIN = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["llama-3.2-1b", "llama-3-8b", "mistral-7b"]),
        "gpu": st.sampled_from(["rtx-3090", "rtx-4090", "l4", "a100-40gb", "2xrtx-4090"]),
        "batch": st.sampled_from([1, 2, 4, 6, 8]),
        "grad_accum": st.sampled_from([1, 2, 4]),
        "seq": st.sampled_from([1024, 2048, 4096]),
        "recompute": st.sampled_from(["none", "full"]),
        "peft": st.sampled_from(["none", "lora"]),
        "loss": st.sampled_from(["full", "chunked"]),
        "margin": st.sampled_from([0.0, 0.0, 0.1]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_TRAIN)
def test_every_training_suggestion_fits_alone_and_is_the_smallest(draw: dict[str, Any]) -> None:
    model, gpu, margin = draw.pop("model"), draw.pop("gpu"), draw.pop("margin")
    req = TrainRequest(model=model, gpu=gpu, options=draw, margin=margin)
    try:
        train(req)
    except VramwiseError:  # a combination the tool refuses is no miss to advise on
        assume(False)
    assume(not _train_fits(req, {}))  # a miss
    found = advise_train(req)
    _ranked(found, TRAIN_KINDS)
    flat = train(req).setup.to_flat()
    for s in found:
        _check_train(req, s, flat)


_INFER = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["llama-3.1-8b", "mistral-7b", "qwen2-7b"]),
        "gpu": st.sampled_from(["rtx-3090", "rtx-4090", "l4", "t4", "a100-40gb"]),
        "context": st.sampled_from([2048, 8192, 32768, 65536]),
        "batch": st.sampled_from([1, 2, 8]),
        "engine": st.sampled_from(["hf", "vllm", "llama.cpp"]),
        "margin": st.sampled_from([0.0, 0.0, 0.05, 0.15]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_INFER)
def test_every_inference_suggestion_fits_alone_and_is_the_smallest(draw: dict[str, Any]) -> None:
    model, gpu, margin = draw.pop("model"), draw.pop("gpu"), draw.pop("margin")
    if draw["engine"] == "vllm":  # vLLM serves sequences up to max_model_len: the drawn context is it
        draw = {"engine": "vllm", "max_model_len": draw["context"], "context": 1024}
    if draw["engine"] == "llama.cpp":  # llama.cpp's -c: its KV cells; the drawn batch is -np (sequences)
        draw = {"engine": "llama.cpp", "ctx_size": draw["context"] * draw["batch"], "parallel": draw["batch"],
                "context": 1024}
    req = InferRequest(model=model, gpu=gpu, options=draw, margin=margin)
    try:
        infer(req)
    except VramwiseError:
        assume(False)
    assume(not _infer_fits(req, {}))
    found = advise_infer(req)
    _ranked(found, INFER_KINDS)
    base = infer(req)
    for s in found:
        _check_infer(req, s, base)


# --- hand cases ----------------------------------------------------------------------------------------------


def test_single_gpu_user_gets_one_gpu_levers_before_more_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    """Trial finding 15: `fit llama-3.2-1b --gpu rtx-3090 --max batch` only said "--dp 2 --zero 3"; an 8-bit
    optimizer (or LoRA) does it on the one GPU, and more GPUs come last."""
    assert main(["fit", "llama-3.2-1b", "--gpu", "rtx-3090", "--max", "batch", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    advice = doc["advice"]
    assert doc["fits"] is False and advice[0]["gpu"] is None and advice[0]["gpus"] == 1
    assert "--optimizer adamw-8bit" in [a["change"] for a in advice]
    own = [i for i, a in enumerate(advice) if a["gpu"] is None]
    more = [i for i, a in enumerate(advice) if a["gpu"] is not None]
    assert own and (not more or max(own) < min(more))
    for a in advice:  # each one re-checked, at micro-batch 1 (the question's smallest setup)
        req = TrainRequest(model="llama-3.2-1b", gpu=a["gpu"] or "rtx-3090", options={"batch": 1, **a["options"]})
        r = train(req)
        assert r.stages[0].verdict is not None and r.stages[0].verdict.fits
        assert r.stages[0].estimate.peak_bytes == a["peak_bytes"]


def test_smaller_micro_batch_keeps_the_global_batch() -> None:
    req = TrainRequest(model="llama-3-8b", gpu="rtx-4090",
                       options={"peft": "lora", "batch": 8, "grad_accum": 2, "recompute": "full"})
    micro = next(s for s in advise_train(req) if s.kind == "micro_batch")
    assert micro.options["batch"] * micro.options["grad_accum"] == 8 * 2
    assert micro.change == f"--batch {micro.options['batch']} --grad-accum {micro.options['grad_accum']}"


def test_fp8_kv_follows_the_gpu_and_the_engine() -> None:
    """An RTX 3090 is compute capability 8.6: vLLM stores an fp8 KV cache there (software conversion in its cache
    kernel), transformers' fp8 path needs 8.9; a T4 (7.5) gets no fp8 weight format either."""
    served = advise_infer(InferRequest(model="llama-3.1-8b", gpu="rtx-3090", serve=True,
                                       options={"max_model_len": 65536}))
    assert "kv_dtype" in [s.kind for s in served]
    plain = advise_infer(InferRequest(model="llama-3.1-8b", gpu="rtx-3090", options={"context": 40000}))
    assert "kv_dtype" not in [s.kind for s in plain] and plain
    ada = advise_infer(InferRequest(model="llama-3.1-8b", gpu="rtx-4090", options={"context": 40000}))
    assert "kv_dtype" in [s.kind for s in ada]
    t4 = advise_infer(InferRequest(model="llama-3-8b", gpu="t4", options={"context": 4096}))
    assert not any(str(s.options.get("format", "")).startswith("fp8") for s in t4)


def test_context_suggestion_is_a_multiple_of_256_and_256_more_misses() -> None:
    req = InferRequest(model="llama-3.1-8b", gpu="rtx-4090", options={"context": 131072})
    ctx = next(s for s in advise_infer(req) if s.kind == "context")
    n = ctx.options["context"]
    assert n % 256 == 0 and _infer_fits(req, {"context": n}) and not _infer_fits(req, {"context": n + 256})


def test_a_fitting_setup_gets_no_advice() -> None:
    assert advise_infer(InferRequest(model="llama-3-8b", gpu="h100")) == ()
    assert advise_train(TrainRequest(model="llama-3.2-1b", gpu="h100")) == ()
    assert advise_train(TrainRequest(model="llama-3.2-1b")) == ()  # no GPU, nothing to fit


def test_min_gpus_lists_the_changes_that_need_fewer_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    """The trial's complaint: `fit llama-3-70b --min-gpus` said 115 H100s without saying that --recompute full
    needs far fewer. Each listed count is the same search run again with that change (app.fit), and is fewer."""
    from vramwise.app.fitting import FitRequest, Question, fit

    code, out, _ = _cli(capsys, "fit", "llama-3-70b", "--gpu", "h100-80gb", "--min-gpus", "--json")
    doc = json.loads(out)
    fewest = doc["answer"]["value"]
    assert code == 0 and doc["advice"]
    kinds = [a["kind"] for a in doc["advice"]]
    assert "recompute" in kinds
    for a in doc["advice"]:
        if a["kind"] == "layout":  # a tp/pp layout: checked as `train` with its flags (test below)
            assert a["gpus"] < fewest
            continue
        r = fit(FitRequest(model="llama-3-70b", gpu="h100-80gb", question=Question.MIN_GPUS, options=a["options"]))
        assert r.answer is not None and r.answer.value == a["gpus"] < fewest
        assert a["peak_bytes"] == r.answer.at.peak_bytes and a["headroom_bytes"] >= 0


@pytest.mark.parametrize(
    ("model", "gpu", "options"),
    [
        ("llama-3-8b", "rtx-4090", []),  # the reviewer's case: 23 GPUs under ZeRO-3, tp=8 fits on 8
        ("llama-3-8b", "rtx-4090", ["--framework", "torchtitan"]),  # FSDP modes instead of ZeRO stages
        ("llama-3-8b", "rtx-4090", ["--recompute", "op-sac"]),  # a policy the layout search does not vary
        ("llama-3-70b", "h100-80gb", []),
    ],
)
def test_min_gpus_suggests_a_layout_on_fewer_gpus(capsys: pytest.CaptureFixture[str], model: str, gpu: str,
                                                  options: list[str]) -> None:
    """`fit --min-gpus` searches data parallelism only; a tensor/pipeline-parallel layout on fewer GPUs is listed
    with flags that `vramwise train` (the CLI, run here) answers with the same peak, fitting; and no power of two
    below its count has a layout of the same kind that `train` confirms (the search on each, with tp*pp > 1)."""
    code, out, _ = _cli(capsys, "fit", model, "--gpu", gpu, *options, "--min-gpus", "--json")
    doc = json.loads(out)
    layout = [a for a in doc["advice"] if a["kind"] == "layout"]
    assert code == 0 and len(layout) == 1
    a = layout[0]
    assert a["gpus"] < doc["answer"]["value"] and a["change"].startswith(f"--gpu {a['gpu']} ")
    assert int(a["options"].get("tp", 1)) * int(a["options"].get("pp", 1)) > 1
    code, out, _ = _cli(capsys, "train", model, *options, *a["change"].split(), "--json")
    ran = json.loads(out)
    assert code == 0 and ran["gpu"]["fits"] is True
    assert ran["peak"]["bytes"] == a["peak_bytes"] and ran["gpu"]["headroom_bytes"] == a["headroom_bytes"]
    given = {k.removeprefix("--").replace("-", "_"): v for k, v in zip(options[::2], options[1::2], strict=True)}
    flat = train(TrainRequest(model=model, options=given)).setup.to_flat()
    for n in (n for n in (2, 4, 8, 16) if n < a["gpus"]):
        assert not _layout_fits(model, f"{n}x{parse_gpu(gpu).gpu.name}", given, flat), n


def _layout_fits(model: str, gpu: str, given: dict[str, Any], flat: Mapping[str, Any]) -> bool:
    from vramwise.app.fitting import FitRequest, Question, fit

    try:
        found = fit(FitRequest(model=model, gpu=gpu, question=Question.LAYOUTS, options=given)).layouts
    except VramwiseError:
        return False
    assert found is not None
    for x in found.fitting:
        if x.tp * x.pp > 1 and x.recompute in ("none", flat["recompute"]) and x.offload in ("none", flat["offload"]):
            changes = {"tp": x.tp, "pp": x.pp, "dp": x.dp, "grad_accum": x.grad_accum,
                       **({"zero": x.zero} if x.zero else {}), **({"fsdp": x.fsdp} if x.fsdp != "none" else {})}
            if _train_fits(TrainRequest(model=model, gpu=gpu, options=given), changes):
                return True
    return False


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_format_order_is_fits() -> None:
    """advice keeps its own copy (importing fit/solve.py would load the training estimator on `vramwise infer`)."""
    from vramwise.fit.solve import FORMATS_BY_QUALITY

    assert FORMATS == FORMATS_BY_QUALITY
