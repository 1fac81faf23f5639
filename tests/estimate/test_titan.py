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


# --- FSDP2's side-stream pools (estimate/train/fsdp_streams.py)

OUTER = 2 * V * H + H  # Llama-2-7B's root unit: embeddings, head, final norm
LAYER = 4 * H * H + 3 * H * 11008 + 2 * H  # one decoder layer


def test_fsdp_stream_pools_by_hand() -> None:
    # fp32 gradient shards (bf16-mixed, grad_dtype fp32) over 8 GPUs, freed by zero_grad into the reduce-scatter
    # stream's pool; bf16 all-gather outputs in the copy-in stream's: in forward the root unit's output is kept
    # (all_gather_state) until the first layer's wait_for_unshard, after that layer's output is allocated: root +
    # one layer, which beats backward's two layers (current and prefetched) on both models
    kw = {**BF16, "precision": "bf16-mixed", "grad_dtype": "fp32", "fsdp": "full", "dp": 8, "allocator_fraction": 0.03}
    est = _train(**kw)
    grads = _bytes(est, "gradients")
    assert abs(grads - 4 * (L * LAYER + OUTER) // 8) <= 4 * 8 * 64  # shards rounded per tensor
    assert _bytes(est, "overhead/allocator/fsdp_reduce_stream") == grads
    assert OUTER + LAYER > 2 * LAYER
    assert _bytes(est, "overhead/allocator/fsdp_all_gather_stream") == 2 * (OUTER + LAYER)
    # Llama-3.1-8B (V 128256, kv 1024, ffn 14336): root 2 x 128256 x 4096 + 4096, a layer 218,112,000 elements
    est8 = _train("llama-3.1-8b", **kw)
    layer8 = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336 + 2 * 4096
    assert layer8 == 218_112_000
    assert _bytes(est8, "overhead/allocator/fsdp_all_gather_stream") == 2 * (2 * 128256 * 4096 + 4096 + layer8)


def test_fsdp_stream_pools_sit_beside_the_loss_backward_not_the_step() -> None:
    kw = {**BF16, "precision": "bf16-mixed", "grad_dtype": "fp32", "fsdp": "full", "dp": 8}
    with_pools = _train(**kw, allocator_fraction=0.03)
    phase = next(p for p in with_pools.phases if p.name == "backward (loss)")
    names = {t.name for t in phase.transient}
    assert {"overhead/allocator/fsdp_reduce_stream", "overhead/allocator/fsdp_all_gather_stream"} <= names
    step = next(p for p in with_pools.phases if p.name == "optimizer step")
    assert not any(t.name.startswith("overhead/allocator/fsdp") for t in step.transient)
    layer = next(p for p in with_pools.phases if p.name == "backward (layer)")
    assert "overhead/allocator/fsdp_all_gather_stream" not in {t.name for t in layer.transient}


def test_no_stream_pools_without_the_allocator_reserve_or_fsdp() -> None:
    # what a CPU trace measures (allocator_fraction 0), DDP, and accumulated gradients (counted live) have none
    kw = {**BF16, "precision": "bf16-mixed", "dp": 8}
    for est in (
        _train(**kw, fsdp="full"),
        _train(**kw, allocator_fraction=0.03),
        _train(**kw, fsdp="full", grad_accum=2, allocator_fraction=0.03),
    ):
        assert not any(t.name.startswith("overhead/allocator/fsdp") for p in est.phases for t in p.transient)


# --- FSDP under tensor parallelism: the root unit and the head's gradients are vocabulary-parallel


def test_fsdp_root_unit_and_head_grads_split_over_tp() -> None:
    # torchtitan apply_tp (9dec370 parallelize_llama.py): tok_embeddings RowwiseParallel, output ColwiseParallel,
    # before fully_shard: a GPU gathers its vocabulary share of both (32000 is a multiple of Megatron's pad 128 x 2)
    kw = {**BF16, "precision": "bf16-mixed", "fsdp": "full", "dp": 4, "tp": 2, "sp": True}
    est = _train(**kw)
    assert _bytes(est, "fsdp/root_unit") == (2 * (V // 2) * H + H) * 2
    assert _bytes(est, "fsdp/head_grad") == (V // 2) * H * 2  # bf16 gradients (bf16-mixed without grad_dtype)
    assert _bytes(est, "loss/logits_grad") == T * (V // 2) * 2


def test_loss_parallel_by_hand() -> None:
    # torch distributed/tensor/parallel/loss.py on this rank's vocabulary shard V/2: _log_softmax saves its fp32
    # result; forward holds the bf16 logits, the fp32 upcast, shifted and exp(shifted); backward zeros_like(x),
    # grad_input + exp(x) and the product beside the saved result
    kw = {**BF16, "precision": "bf16-mixed", "fsdp": "full", "dp": 4, "tp": 2, "sp": True}
    est, full = _train(**kw, loss="loss-parallel"), _train(**kw)
    v = V // 2
    assert _bytes(est, "activations/loss") == 4 * v * T
    assert _bytes(est, "loss/backward") == 12 * v * T
    assert _bytes(est, "loss/logits") == (2 + 8) * v * T
    assert _bytes(full, "loss/backward") == 8 * v * T
    assert _phase(est, "backward (loss)") - _phase(full, "backward (loss)") == 4 * v * T
    with pytest.raises(InvalidWorkloadError, match="loss-parallel"):
        _train(**BF16, loss="loss-parallel")
