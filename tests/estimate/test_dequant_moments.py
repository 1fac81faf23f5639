"""When a QLoRA base's dequantized weight is live, against arithmetic written out here.

torchao 0.6.1 dtypes/nf4tensor.py LinearNF4: forward saves only the NF4 weight and runs
F.linear(input, weight.to(input.dtype)); backward runs grad_output @ weight.to(grad_output.dtype). bitsandbytes
(95f9af3, autograd/_functions.py MatMul4Bit) likewise saves only the 4-bit B and dequantizes it per matmul. So the
16-bit copy of one layer weight exists only while that layer's matmul runs: not at the forward's end, nor while
the loss runs backward through an unquantized head, but in the rebuilt layer's moment under full recompute.
Llama-2-7B shapes: the largest layer weight is an MLP projection, 11008 x 4096 elements, 2 B each in bf16.
"""

from __future__ import annotations

from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

DEQUANT = 11008 * 4096 * 2  # 90,177,536 B: mlp.gate/up/down of Llama-2-7B, bf16
NAME = "qlora/dequantized_weight"


def _train(**kw: object) -> Estimate:
    flat = {"cuda_context_mib": 0, "allocator_fraction": 0.0, "precision": "bf16", "batch": 1, "seq": 1024,
            "peft": "qlora", **kw}
    return estimate_training(catalog_spec("llama-2-7b"), TrainSetup.from_flat(**flat))


def _in(est: Estimate, kind: PhaseKind) -> int:
    phase = next(p for p in est.phases if p.kind == kind)
    return sum(t.bytes for t in phase.transient if t.name == NAME)


def test_full_recompute_holds_the_dequantized_weight_only_in_the_rebuilt_layer() -> None:
    est = _train(recompute="full")
    assert _in(est, PhaseKind.BACKWARD_RECOMPUTE) == DEQUANT
    assert _in(est, PhaseKind.FORWARD_END) == 0
    assert _in(est, PhaseKind.BACKWARD_LOSS) == 0


def test_torchtune_compiled_chunked_loss_backward_has_no_dequantized_weight() -> None:
    est = _train(recompute="full", framework="torchtune", loss="torchtune-chunked", compile=True)
    assert _in(est, PhaseKind.BACKWARD_LOSS) == 0
    assert _in(est, PhaseKind.BACKWARD_RECOMPUTE) == DEQUANT


def test_without_recompute_the_forward_end_still_carries_it() -> None:
    # no rebuilt-layer moment exists then: the forward's end stands for the last layer's matmuls (kept as before)
    est = _train(recompute="none")
    assert _in(est, PhaseKind.FORWARD_END) == DEQUANT
