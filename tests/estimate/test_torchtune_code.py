"""torchtune's own model and recipe code where it keeps other tensors than transformers', by hand arithmetic.

Oracles (read at the commits bench/data/training/manifest.toml cites, 1814feb and 30b8519, and v0.7.0 bd2a0fc7):
- torchtune modules/attention.py MultiHeadAttention.forward: with fewer KV heads than query heads, k and v are
  brought to every query head by ``unsqueeze(2).expand(...).flatten(1, 2)`` (30b8519: expand then reshape), a
  copy each, and the kernel (flex_attention for a packed batch, else sdpa) saves those copies (activations.py
  TORCHTUNE_KV_COPY);
- torch _composable/fsdp _fsdp_param_group.py (pre_backward, _prefetch_unshard, post_backward) with torchtune's
  TransformerDecoder.chunked_output calling the head once per chunk: the chunked head's backward under FSDP2 full
  sharding holds the gathered head unit beside the gradients loss.py _head_chunks counts on one GPU, and no layer
  unit yet (training.py FSDP_CHUNKS).
"""

from __future__ import annotations

import pytest
from phase_sums import transient_sums as _phase

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}
BASE = {
    "batch": 2, "seq": 4096, "precision": "bf16", "optimizer": "adamw", "optimizer_impl": "fused", "peft": "none",
    "recompute": "none", "attention": "sdpa", "loss": "full", "optimizer_in_backward": False, **NO_OVERHEAD,
}  # fmt: skip


def _train(model: str, **kw: object) -> Estimate:
    return estimate_training(catalog_spec(model), TrainSetup.from_flat(**{**BASE, **kw}))


def _term(est: Estimate, name: str) -> int:
    return est.term(name).bytes


def test_gqa_keys_and_values_copied_to_every_query_head() -> None:
    # Llama-3.2-3B: 28 layers, 24 query heads and 8 KV heads of 128; T = 2 x 4096 tokens, bf16
    layers, t, q, kv = 28, 2 * 4096, 24 * 128, 8 * 128
    tune = _term(_train("llama-3.2-3b", framework="torchtune"), "activations/attention/qkv")
    hf = _term(_train("llama-3.2-3b"), "activations/attention/qkv")
    assert tune == layers * t * 2 * (q + 2 * q)  # rotary's q, and k and v at every query head
    assert hf == layers * t * 2 * (q + 2 * kv)  # transformers: k and v at the KV heads (the cache's copies)
    assert tune - hf == 28 * 8192 * 2 * 2 * (3072 - 1024)  # 1.75 GiB: the 3B packed row's shortfall


def test_as_many_kv_heads_as_query_heads_copies_nothing() -> None:
    # Llama-2-7B: 32 heads, 32 KV heads: no expand, the same tensors as transformers' path
    tune = _term(_train("llama-2-7b", framework="torchtune", seq=1024), "activations/attention/qkv")
    hf = _term(_train("llama-2-7b", seq=1024), "activations/attention/qkv")
    assert tune == hf == 32 * 2 * 1024 * 2 * 3 * 4096


def test_chunked_head_backward_under_fsdp_full() -> None:
    # Llama-3.1-70B on 8 GPUs, torchtune's 70B_full.yaml: the head (128256 x 8192, bf16) a unit of its own
    v, h, t, n = 128256, 8192, 2 * 2048, 8
    est = _train(
        "llama-3.1-70b", framework="torchtune", seq=2048, recompute="full", loss="torchtune-chunked", compile=True,
        dp=8, fsdp="full", offload="params", fsdp_outer_units=True,
    )  # fmt: skip
    head = _phase(est, PhaseKind.BACKWARD_HEAD_CHUNKS)
    assert head["fsdp/head_unit"] == v * h * 2  # gathered again for its backward, once at a time
    assert head["loss/head_grad"] == 3 * v * h * 2  # the first chunk's (a view), the second's and their sum
    assert head["loss/logits_grads"] == t * (n - 2) * v * 2 // n
    assert head["loss/backward"] == 2 * (t // n) * h * 2
    assert head["activations/checkpoints"] == 80 * t * h * 2  # every layer's input, full recompute
    assert "fsdp/layer_units" not in head  # the last layer is prefetched only at the first chunk's pre_backward
    assert est.peak_phase is not None and est.peak_phase.kind is PhaseKind.BACKWARD_HEAD_CHUNKS
    assert not any("backward (head chunks)" in note for note in est.notes)


def test_packed_batch_gathers_the_rotary_cache_per_call() -> None:
    # torchtune Llama3ScaledRoPE.forward: cache[input_pos] -> (b, s, head_dim/2, 2) fp32, for q's call and k's call
    layers, t, d = 28, 2 * 4096, 128
    packed = _train("llama-3.2-3b", framework="torchtune", packed=True)
    assert packed.term("activations/attention/rope_gather").bytes == layers * t * 2 * d * 4  # 224 MiB
    assert layers * t * 2 * d * 4 == 224 * 2**20
    # unpacked: cache[:seq_len] is a view; compiled: inductor fuses the index into the rotation's kernel
    for est in (_train("llama-3.2-3b", framework="torchtune"), _train("llama-3.2-3b", framework="torchtune",
                                                                     packed=True, compile=True)):
        assert not any(t.name == "activations/attention/rope_gather" for p in est.phases for t in p.transient)
        assert not any(t.name == "activations/attention/rope_gather" for t in est.persistent)


def test_packed_outside_torchtune_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        _train("llama-3.2-3b", packed=True)
    assert err.value.field == "packed" and "\n" not in str(err.value)


def test_one_rotary_cache_buffer_per_model() -> None:
    # Llama3ScaledRoPE.build_rope_cache: stack([cos, sin], -1) of fp32 (131072, 64) angles, one module for all layers
    est = _train("llama-3.2-3b", framework="torchtune")
    assert est.term("buffers/rope_cache").bytes == 131072 * 64 * 2 * 4 == 64 * 2**20
    assert not any(t.name == "buffers/rope_cache" for t in _train("llama-3.2-3b").terms)  # transformers: inv_freq
