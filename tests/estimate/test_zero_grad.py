"""``--zero-grad zeros``: gradients zeroed in place (``zero_grad(set_to_none=False)``, PyTorch < 2.0's default) stay
allocated through the next forward; ``none`` (PyTorch >= 2.0) frees them after each step.

Oracles: the traced step run with each ``set_to_none`` (vramwise.verify.trace: the second iteration's forward sees
the first one's gradients or not), and arithmetic written out here.
"""

from __future__ import annotations

from typing import Any

import pytest
from tiny_configs import HEADS

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate, PhaseKind, Step
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.workload import TrainSetup

BERT = {**HEADS["bert-seq-cls"], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _estimate(zero_grad: str, **kw: Any) -> Estimate:
    spec = spec_from_config(BERT, name="tiny", source="test")
    setup = TrainSetup.from_flat(
        batch=2, seq=256, precision="fp32", cuda_context_mib=0, allocator_fraction=0.0, zero_grad=zero_grad, **kw
    )
    return estimate_training(spec, setup)


def _forward_end(est: Estimate) -> int:
    return est.phase_total(next(p for p in est.phases if p.kind is PhaseKind.FORWARD_END))


def test_zeroed_gradients_stay_through_the_forward() -> None:
    # fp32 gradients of every trainable parameter: 4 B x the parameters (the weights' own fp32 bytes)
    none, zeros = _estimate("none"), _estimate("zeros")
    weights = sum(t.bytes for t in none.persistent if t.name.startswith("weights/"))
    assert "gradients" in {t.name for t in zeros.persistent}
    assert "gradients" not in {t.name for t in none.persistent}
    assert _forward_end(zeros) - _forward_end(none) == weights
    # with accumulation the gradients persist either way: zeros changes nothing there
    assert _estimate("zeros", grad_accum=2).peak_bytes == _estimate("none", grad_accum=2).peak_bytes


@pytest.mark.parametrize(
    ("kw", "owner"),
    [
        ({"dp": 2, "zero": 1}, "DeepSpeed ZeRO"),
        ({"dp": 2, "fsdp": "full"}, "FSDP"),
        ({"optimizer_in_backward": True, "precision": "bf16"}, "optimizer_in_backward"),
    ],
)
def test_engines_that_own_the_gradients_are_refused(kw: dict[str, Any], owner: str) -> None:
    with pytest.raises(InvalidWorkloadError, match=owner) as err:
        TrainSetup.from_flat(zero_grad="zeros", **kw)
    assert err.value.field == "zero_grad"


def test_an_unknown_value_names_the_field() -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        TrainSetup.from_flat(zero_grad="keep")
    assert err.value.field == "zero_grad"


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "amp"])
def test_the_traced_step_keeps_the_zeroed_gradients(precision: str) -> None:
    # the second iteration's forward end, traced with set_to_none False and True: the difference is the gradients
    # the first step left (fp32, or the 16-bit weights' own under bf16-mixed), which the estimate adds; the
    # forward end within 2% and the backward's peak within 5% (tests/estimate/test_train_vs_trace.py's bounds)
    from vramwise.verify.trace import TraceRecipe, trace_training

    kept, freed = (
        trace_training(BERT, TraceRecipe(batch=2, seq=256, precision=precision, zero_grad=z))
        for z in ("zeros", "none")
    )
    # (the marks count each gradient in CUDA's 512-byte blocks, the grads figure its exact bytes)
    assert kept.marks["forward_end"] - freed.marks["forward_end"] == pytest.approx(kept.grads, abs=512 * 64)
    spec = spec_from_config(BERT, name="tiny", source="test")
    setup = TrainSetup.from_flat(
        batch=2, seq=256, precision=precision, cuda_context_mib=0, allocator_fraction=0.0, zero_grad="zeros"
    )
    est = estimate_training(spec, setup)
    assert est.term("gradients").bytes == kept.grads
    assert _forward_end(est) == pytest.approx(kept.marks["forward_end"], rel=0.02)
    backward = max(est.phase_total(p) for p in est.phases if p.kind.step is Step.BACKWARD)
    assert backward == pytest.approx(kept.phase_peaks[Step.BACKWARD], rel=0.05)
