"""A chunked head sharing one weight (torchtune's compiled CEWithChunkedOutputLoss): the head's matmuls' backward,
by hand arithmetic and by a traced backward on the CPU.

Oracles: torch autograd's input_buffer.cpp ``accumulate`` (a gradient reaching an input that already holds one is
added in place, ``old_var.add_(var)``, so the new one exists beside the accumulated one until the add), the
engine's order (a node's priority is its sequence number: the loss nodes, created after the head's matmuls, all
run first), and the step traced below with vramwise.verify.live.LiveStorages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from phase_sums import transient_sums as _phase

from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

V, H = 128256, 3072  # Llama-3.2-3B (tied embeddings: the head's weight is the embedding)
B, S = 2, 4096
T = B * S
SETUP = {
    "batch": B, "seq": S, "precision": "bf16", "optimizer": "adamw", "optimizer_impl": "fused", "peft": "none",
    "recompute": "none", "attention": "sdpa", "loss": "torchtune-chunked", "compile": True,
    "cuda_context_mib": 0, "allocator_fraction": 0.0,
}  # fmt: skip


def _train(**kw: object) -> Estimate:
    return estimate_training(catalog_spec("llama-3.2-3b"), TrainSetup.from_flat(**{**SETUP, **kw}))


def test_second_chunk_holds_three_weight_gradients() -> None:
    est = _train()
    head = _phase(est, PhaseKind.BACKWARD_HEAD_CHUNKS)
    assert head["loss/logits_grads"] == T * 6 * V * 2 // 8  # chunks 1..6: 8 consumed, 7's released with its matmul
    assert head["loss/head_grad"] == 3 * V * H * 2  # the first (a view), the second and their out-of-place sum
    assert head["loss/backward"] == 2 * (T // 8) * H * 2
    assert "activations/loss" not in head  # released by the loss nodes, which all ran before
    loss = _phase(est, PhaseKind.BACKWARD_LOSS)
    # the first matmul: every chunk's logits gradient (the saved chunks' size) and one weight gradient
    assert loss["loss/head_grad"] == V * H * 2 and loss["activations/loss"] == T * (V * 2 + 8)
    # at this T the second chunk's moment is the larger: 2 x V*h*2 > 2 x T/8*V*2 + 8T (h > T/8)
    assert sum(head.values()) > sum(loss.values())


def test_frozen_head_has_no_such_moment_and_eager_loss_the_same() -> None:
    assert not any(p.kind is PhaseKind.BACKWARD_HEAD_CHUNKS for p in _train(peft="lora").phases)
    # the eager loss leaves the same gradients (the layers' saved tensors differ: compile changes them)
    eager = _phase(_train(compile=False), PhaseKind.BACKWARD_HEAD_CHUNKS)
    compiled = _phase(_train(), PhaseKind.BACKWARD_HEAD_CHUNKS)
    assert {k: b for k, b in eager.items() if k.startswith("loss/")} == {
        k: b for k, b in compiled.items() if k.startswith("loss/")
    }


def test_traced_chunked_head_backward(tmp_path: Path) -> None:
    """A head shared by 8 chunks, each with a loss node whose backward makes one logits-sized gradient (as the
    compiled cross entropy's does), traced on the CPU with torch.profiler's memory events (no dispatch mode: a
    Python mode keeps references that turn every in-place accumulation into an out-of-place one). The peak is the
    second chunk's accumulation: 6 logits gradients, three weight-sized ones, two hidden-state gradients and the
    loss's 4-byte seed."""
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile

    t, h, v, n = 64, 32, 4096, 8
    hidden = torch.randn(t, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    scale = [torch.randn(t // n, v) for _ in range(n)]
    chunks = [torch.nn.functional.linear(x, weight) for x in hidden.chunk(n)]
    loss = sum((c * s).sum() for c, s in zip(chunks, scale, strict=True))  # mul saves only its constant
    del chunks
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss.backward()
    adds = [e.name for e in prof.events() if e.name in ("aten::add", "aten::add_")]
    assert adds == ["aten::add"] + ["aten::add_"] * (n - 2)  # out of place once (a view), then in place
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    memory = [e["args"] for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    # "Total Allocated": the CPU allocator's live bytes after each event (nothing else is allocated meanwhile)
    start = min(m["Total Allocated"] - m["Bytes"] for m in memory)
    peak = max(m["Total Allocated"] for m in memory) - start
    logits, grad_w, grad_h = t // n * v * 4, v * h * 4, t // n * h * 4
    assert peak == (n - 2) * logits + 3 * grad_w + 2 * grad_h + 4


def test_fsdp_grad_op_names_the_moment_it_does_not_model() -> None:
    est = _train(dp=8, fsdp="grad-op")  # not read there (FSDP full: tests/estimate/test_torchtune_code.py)
    assert not any(p.kind is PhaseKind.BACKWARD_HEAD_CHUNKS for p in est.phases)
    assert any("backward (head chunks)" in n and "not modelled" in n for n in est.notes)
