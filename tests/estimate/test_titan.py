"""torchtitan's mechanisms against arithmetic written out here from torchtitan's and torch's source.

Llama-2-7B shapes (h 4096, 32 layers, V 32000); every expected value is computed in the test from shapes and the
rule it names, not read from the estimator.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
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


def test_fsdp_over_cp_shards_the_states_over_dp_times_cp() -> None:
    # torchtitan distributed/parallel_dims.py: FSDP's mesh is dp_shard x cp, so 2 x 4 GPUs hold an eighth each
    kw = {**BF16, "precision": "bf16-mixed", "fsdp": "full", "dp": 2, "cp": 4}
    over, dp_only = _train(**kw, fsdp_over_cp=True), _train(**kw)
    for name in ("optimizer/states", "optimizer/master_weights"):
        assert abs(4 * _bytes(over, name) - _bytes(dp_only, name)) <= 4 * 64  # shard of 8 vs shard of 2
    # dp 1: FSDP over the 8 context-parallel GPUs alone (torchtitan's 'FSDP 1, CP 8' benchmark row)
    cp8 = _train(**{**kw, "dp": 1, "cp": 8}, fsdp_over_cp=True)
    assert _bytes(cp8, "optimizer/states") == _bytes(over, "optimizer/states")


def test_fsdp_at_dp_1_needs_fsdp_over_cp() -> None:
    with pytest.raises(InvalidLayoutError, match="dp must be >= 2"):
        _train(**BF16, fsdp="full", dp=1, cp=8)
    with pytest.raises(InvalidLayoutError, match="dp must be >= 2"):
        _train(**BF16, fsdp="full", dp=1, cp=1, fsdp_over_cp=True)
