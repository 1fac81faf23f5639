"""``--range`` (app/ranges.py): each uncertainty's low and high against arithmetic written out from the estimate's
own terms, the order low <= estimate <= high <= bound over random setups, and the bad combinations (one line,
exit 2).

Oracles: the allocator's low is the estimate less its ``overhead/allocator`` term (reserved = allocated: the reserve
is a fraction of each phase's tensors, so the peak phase stays the peak); the CUDA context's span is the difference
of two published rows of estimate/cuda_context.py (RTX 3090 at CUDA 12.8, 256 MiB; RTX 6000 Ada at 13.0, 426 MiB).
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vramwise.app.ranges import infer_range, train_range
from vramwise.app.run import InferRequest, TrainRequest, infer, train
from vramwise.cli import main
from vramwise.units import MIB


def _row(rng, name):  # type: ignore[no-untyped-def]
    return next(u for u in rng.uncertainties if u.name == name)


def test_train_allocator_low_is_the_estimate_less_its_reserve() -> None:
    req = TrainRequest(model="llama-3-8b", options={"peft": "lora"}, gpu="3090")
    r = train(req)
    est = r.stages[0].estimate
    reserve = sum(t.bytes for t in est.peak_phase.transient if t.name == "overhead/allocator")
    rng = train_range(req, r)
    assert reserve > 0
    assert _row(rng, "allocator").low_bytes == est.peak_bytes - reserve


def test_cuda_context_span_on_a_3090_is_two_published_rows() -> None:
    req = TrainRequest(model="llama-3.2-1b", options={"peft": "lora"}, gpu="3090")
    rng = train_range(req, train(req))
    row = _row(rng, "CUDA context")
    assert (row.low, row.high) == ("CUDA 12.8", "CUDA 13.0")
    # the context is a constant term outside the allocator's reserve (estimate/cuda_context.py): 426 - 256 MiB
    assert row.high_bytes - row.low_bytes == (426 - 256) * MIB


def test_sequence_high_is_the_estimate_at_the_longest() -> None:
    req = TrainRequest(model="llama-3.2-1b", options={"seq": 1024}, gpu="H100")
    r = train(req)
    rng = train_range(req, r, longest=4096)
    row = _row(rng, "sequence length")
    at_4096 = train(TrainRequest(model="llama-3.2-1b", options={"seq": 4096}, gpu="H100")).stages[0].estimate
    assert row.high_bytes == at_4096.peak_bytes
    assert row.low_bytes == r.stages[0].estimate.peak_bytes
    assert row.high == "4,096 tokens (--max-seq)"


def test_pinned_values_are_not_ranged() -> None:
    req = InferRequest(model="llama-3-8b", options={"cuda_version": "12.8", "allocator_fraction": 0.05,
                                                    "engine": "vllm", "vllm_version": "0.10"}, gpu="H100")
    rng = infer_range(req, infer(req))
    assert all(u.pinned for u in rng.uncertainties if u.name != "sequence length")


def test_vllm_releases_span() -> None:
    req = InferRequest(model="llama-3-8b", options={"engine": "vllm"}, gpu="H100")
    rng = infer_range(req, infer(req))
    row = _row(rng, "engine release")
    assert row.low_bytes <= rng.estimate <= row.high_bytes
    assert row.low.startswith("vLLM ") and row.high.startswith("vLLM ")
    # engines/vllm_releases.py: 0.8 (V1 of 0.7-0.8) counts the CUDA context inside gpu_memory_utilization's budget,
    # 0.9 and later outside it, so their peaks differ by the context's row: 426 MiB (RTX 6000 Ada, CUDA 13.0, the
    # largest lazy row standing in for an H100); the high is one of the later releases
    def at(version: str) -> int:
        return infer(InferRequest(model="llama-3-8b", options={"engine": "vllm", "vllm_version": version},
                                  gpu="H100")).estimate.peak_bytes

    # within one KV block (16 tokens x 131,072 B = 2 MiB): 0.8's runner buffers are inside the budget, so the pool
    # is smaller there by them and its remainder below a block (engines/vllm_v085.py) is another
    assert abs(at("0.9") - at("0.8") - 426 * MIB) < 16 * 131_072
    assert row.high_bytes == at("0.9") and row.low_bytes <= at("0.8")


@settings(max_examples=12, deadline=None)
@given(
    model=st.sampled_from(["llama-3.2-1b", "qwen2.5-0.5b", "llama-2-7b"]),
    seq=st.sampled_from([256, 1024, 2048]),
    batch=st.integers(min_value=1, max_value=4),
    peft=st.sampled_from(["none", "lora"]),
    gpu=st.sampled_from([None, "3090", "H100"]),
)
def test_low_estimate_high_bound_in_order(model: str, seq: int, batch: int, peft: str, gpu: str | None) -> None:
    req = TrainRequest(model=model, options={"seq": seq, "batch": batch, "peft": peft}, gpu=gpu)
    rng = train_range(req, train(req))
    assert rng.low <= rng.estimate <= rng.high <= rng.bound
    for u in rng.uncertainties:
        assert u.low_bytes <= rng.estimate <= u.high_bytes, u
    ireq = InferRequest(model=model, options={"context": seq, "batch": batch}, gpu=gpu)
    irng = infer_range(ireq, infer(ireq))
    assert irng.low <= irng.estimate <= irng.high <= irng.bound


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ("train", "llama-3.2-1b", "--max-seq", "4096"),  # --max-seq without --range
        ("train", "llama-3.2-1b", "--range", "--emit", "trainer"),
        ("train", "llama-3.2-1b", "--seq", "4096", "--range", "--max-seq", "1024"),  # longest below the given
        ("infer", "llama-3.2-1b", "--context", "4096", "--range", "--max-seq", "1k"),
        ("fit", "llama-3.2-1b", "--gpu", "h100", "--min-gpus", "--range"),  # fit: --max's answer only
        ("fit", "llama-3.2-1b", "--gpu", "h100", "--max", "seq", "--range", "--max-seq", "8k"),  # the answer is it
    ],
)
def test_bad_combinations_one_line_exit_2(argv: tuple[str, ...]) -> None:
    code, _, err = _cli(*argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_json_and_exit_status_follow_the_high() -> None:
    # Llama 3 8B LoRA at 2,048 tokens fits an H100; at its 8,192 positions with batch 2 the high does not
    code, out, _ = _cli("train", "llama-3-8b", "--peft", "lora", "--batch", "2", "--gpu", "h100", "--range", "--json")
    doc = json.loads(out)
    rng = doc["range"]
    assert set(rng) == {"low", "estimate", "high", "bound", "high_fits", "uncertainties", "notes"}
    assert rng["low"] <= rng["estimate"] <= rng["high"] <= rng["bound"]
    assert doc["gpu"]["fits"] is True and rng["high_fits"] is False and code == 3
    assert {u["name"] for u in rng["uncertainties"]} == {"allocator", "sequence length", "CUDA context"}


def test_inference_bound_holds_the_load_in_own_segments() -> None:
    # transformers' inference of Llama 3 8B on a 4090: the bound's allocator is the load's own segments
    # (941,088,768 B, tests/estimate/test_range_arithmetic.py) plus the flat 3% on the other tensors, above the flat
    # 3% on all of them
    req = InferRequest(model="llama-3-8b", gpu="4090")
    r = infer(req)
    rng = infer_range(req, r)
    est = r.estimate
    live = (*est.persistent, *est.peak_phase.transient)
    tensors = sum(t.bytes for t in live if not t.name.startswith("overhead/"))
    weights = sum(t.bytes for t in est.persistent if t.name.startswith("weights/"))
    reserve = sum(t.bytes for t in est.peak_phase.transient if t.name == "overhead/allocator")
    assert rng.high <= rng.bound
    # the bound at the high's context is at least the estimate with the load's reserve in place of the flat one
    assert rng.bound >= est.peak_bytes - reserve + 941_088_768 + int(0.03 * (tensors - weights))


def test_fit_range_is_the_range_at_the_answer() -> None:
    # fit --max batch answers 2 for Llama 3 8B LoRA with full recompute on a 4090 (README's fit example); --range
    # ranges train at batch 2, so its figures equal train --range's at --batch 2
    code, out, _ = _cli("fit", "llama-3-8b", "--gpu", "4090", "--peft", "lora", "--recompute", "full", "--max",
                        "batch", "--range", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["answer"]["value"] == 2 and doc["range"]["at"] == "batch 2"
    req = TrainRequest(model="llama-3-8b", options={"peft": "lora", "recompute": "full", "batch": 2}, gpu="4090")
    rng = train_range(req, train(req))
    assert (doc["range"]["low"], doc["range"]["high"], doc["range"]["bound"]) == (rng.low, rng.high, rng.bound)


def test_an_engine_cap_is_the_sequence_high() -> None:
    # vLLM rejects a request longer than --max-model-len (4,096 here): the context's high is that cap less the new
    # tokens, not the model's 8,192 positions (a longer run would be the user's error, not a range)
    req = InferRequest(model="llama-3-8b", options={"engine": "vllm", "max_model_len": 4096, "new_tokens": 96},
                       gpu="H100")
    row = _row(infer_range(req, infer(req)), "sequence length")
    assert row.high == "4,000 tokens (--max-model-len)"


def test_a_high_past_the_rotary_positions_keeps_the_plain_runs_note() -> None:
    # review finding: `train llama-3-8b -s 16384` notes that 16,384 exceeds its 8,192 positions (rope scaling
    # needed, estimated as asked), but `--range --max-seq 16384` ran that length with the note dropped
    plain = train(TrainRequest(model="llama-3-8b", options={"peft": "lora", "seq": 16384}))
    beyond = [n for n in plain.stages[0].estimate.notes if "exceeds max_position_embeddings" in n]
    assert len(beyond) == 1
    req = TrainRequest(model="llama-3-8b", options={"peft": "lora"})
    rng = train_range(req, train(req), longest=16384)
    assert f"at the high: {beyond[0]}" in rng.notes
    # inference: the context plus the new tokens, as a plain run counts them
    ireq = InferRequest(model="llama-3-8b", options={"new_tokens": 100})
    rng = infer_range(ireq, infer(ireq), longest=16384)
    assert any(n.startswith("at the high: context + new tokens 16,484 exceeds") for n in rng.notes), rng.notes
    # within the positions (the default high is the model's own limit): no such note
    assert not any(n.startswith("at the high") for n in infer_range(ireq, infer(ireq)).notes)


def test_a_bare_size_names_what_its_range_leaves_out() -> None:
    # review finding: `infer 14b --range --max-seq 8k` showed "sequence length 26.49 .. 26.49" (no effect) because a
    # bare size has no KV cache or activations to grow; the range now says it leaves them out
    req = InferRequest(model="14b", options={})
    r = infer(req)
    assert r.estimate.missing
    rng = infer_range(req, r, longest=8000)
    assert _row(rng, "sequence length").high_bytes == _row(rng, "sequence length").low_bytes
    assert any("leave out what the estimate does not compute (kv_cache" in n for n in rng.notes), rng.notes
    # a catalog model computes every term: no such note
    full = InferRequest(model="llama-3-8b", options={})
    assert not any("does not compute" in n for n in infer_range(full, infer(full)).notes)
