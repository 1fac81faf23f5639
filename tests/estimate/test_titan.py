"""torchtitan's mechanisms against arithmetic written out here from torchtitan's and torch's source.

Llama-2-7B shapes (h 4096, 32 layers, V 32000); every expected value is computed in the test from shapes and the
rule it names, not read from the estimator.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

H, L, V = 4096, 32, 32000  # Llama-2-7B
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}
T = 2 * 2048
BF16 = {"precision": "bf16", "batch": 2, "seq": 2048}


def _bytes(est: Estimate, name: str) -> int:
    try:
        return est.term(name).bytes
    except KeyError:
        return 0


def _train(model: str = "llama-2-7b", **kw: object) -> Estimate:
    return estimate_training(catalog_spec(model), TrainSetup.from_flat(**{**NO_OVERHEAD, **kw}))


def _phase(est: Estimate, name: str) -> int:
    return next(p.bytes for p in est.phases if p.name == name)


def test_compiled_loss_keeps_the_bf16_logits_and_writes_one_bf16_gradient() -> None:
    # torchtitan components/loss.py build_cross_entropy_loss (e7c0cae): torch.compile(cross_entropy_loss);
    # inductor's forward saves its input (the bf16 logits) and two fp32 (T, 1) buffers, allocates no (T, V) one;
    # its backward allocates one (T, V) buffer in the logits' dtype
    est = _train(loss="compiled", **BF16)
    assert _bytes(est, "activations/loss") == (2 * V + 2 * 4) * T
    assert _bytes(est, "loss/backward") == 2 * V * T
    full = _train(loss="full", **BF16)
    # the eager loss keeps the fp32 log-softmax (4V) and holds two fp32 gradients (8V) in its backward
    assert _bytes(full, "activations/loss") == 4 * V * T
    assert _phase(full, "backward (loss)") - _phase(est, "backward (loss)") == (4 + 8) * V * T - (2 * V + 8 + 2 * V) * T


def test_compiled_loss_has_no_vocabulary_parallel_path() -> None:
    with pytest.raises(InvalidWorkloadError, match="loss"):
        _train(loss="compiled", precision="bf16", batch=1, seq=512, tp=2, dp=1)
