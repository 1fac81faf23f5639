"""Accurate training estimates against arithmetic written out here from the rules (ZeRO paper, peft, Megatron).

Φ for Llama-2-7B is 6,738,415,616 (Meta's model card; equal to transformers on the meta device, see
tests/spec). Every expected value below is computed in the test from shapes, not read from the estimator.
"""

from __future__ import annotations

import pytest
from hf_oracle import hf_param_count

from vramwise.catalog import models
from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.estimate.term import Estimate
from vramwise.estimate.train.training import estimate_stages, estimate_training
from vramwise.formats import get_format
from vramwise.spec.load import catalog_spec
from vramwise.spec.params import parameter_groups
from vramwise.workload import TrainSetup

PHI_7B = 6_738_415_616
H, L, V, FFN = 4096, 32, 32000, 11008  # Llama-2-7B
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}


def _bytes(est: Estimate, name: str) -> int:
    """A term's bytes wherever it lives (persistent or any phase); 0 when absent."""
    try:
        return est.term(name).bytes
    except KeyError:
        return 0


def _states(est: Estimate) -> int:
    weights = sum(t.bytes for t in est.persistent if t.name.startswith("weights/"))
    names = ("gradients", "optimizer/master_weights", "optimizer/states")
    return weights + sum(_bytes(est, n) for n in names)


def _train(model: str = "llama-2-7b", **kw: object) -> Estimate:
    return estimate_training(catalog_spec(model), TrainSetup.from_flat(**{**NO_OVERHEAD, **kw}))


def test_mixed_precision_adamw_holds_16_bytes_per_parameter_and_peaks_at_the_step() -> None:
    est = _train(precision="bf16-mixed", optimizer="adamw")
    assert _bytes(est, "optimizer/master_weights") == 4 * PHI_7B
    assert _bytes(est, "optimizer/states") == 8 * PHI_7B
    assert _bytes(est, "gradients") == 2 * PHI_7B
    assert _states(est) == 16 * PHI_7B  # (2 + 2 + 12)Φ, the ZeRO paper's K = 12
    # fused Adam (DeepSpeed/Megatron) adds no copy, but the half gradients are upcast for the fp32 update
    assert est.peak_phase is not None and est.peak_phase.name == "optimizer step"
    assert est.peak_bytes == (16 + 4) * PHI_7B
    assert "optimizer/step_transient" not in [t.name for t in est.terms]


def test_pure_bf16_foreach_adamw_matches_the_traced_7b_step() -> None:
    # notes §6: Llama-2-7B, bf16, AdamW(foreach), b=1 s=2048 peaks at the step at 67,384,322,560 B (62.76 GiB):
    # params 2Φ + grads 2Φ + states 4Φ + the foreach sqrt copy 2Φ.
    est = _train(precision="bf16", optimizer="adamw", optimizer_impl="foreach", batch=1, seq=2048)
    assert est.peak_bytes == 10 * PHI_7B
    assert est.peak_bytes == pytest.approx(67_384_322_560, rel=1e-5)


@pytest.mark.parametrize(
    ("zero", "expected"),
    [(0, 16.0), (1, 2 + 2 + 12 / 64), (2, 2 + (2 + 12) / 64), (3, 16 / 64)],
)
def test_zero_stages_partition_model_states_as_the_zero_paper(zero: int, expected: float) -> None:
    # Rajbhandari et al. 2020, Figure 1 / Table 1: N_d = 64 data-parallel GPUs, K = 12
    est = _train(precision="bf16-mixed", dp=64, zero=zero)
    assert _states(est) == pytest.approx(expected * PHI_7B, rel=1e-6)


def _phase_terms(est: Estimate, phase: str) -> dict[str, int]:
    return {t.name: t.bytes for t in next(p for p in est.phases if p.name == phase).transient}


def test_zero_1_and_2_gradients_live_as_deepspeed_allocates_them() -> None:
    # W4. DeepSpeed stage_1_and_2.py (commit 38327e07): ZeRO-2 allocates its gradient partition during
    # backward (copy_grads_in_partition) and frees it in step(); ZeRO-1 keeps the full .grad until the
    # reduction at backward end, then only its partition (averaged_gradients) for the step; both allocate an
    # ipg_buffer of reduce_bucket_size (5e8) elements in backward(). stage3.py preallocates its partition once.
    # Llama-2-7B, bf16-mixed (2 B gradients), dp 4, one micro-batch per step.
    bucket = min(500_000_000, PHI_7B) * 2
    one, two, three = (_train(precision="bf16-mixed", dp=4, zero=z) for z in (1, 2, 3))
    for est in (one, two):
        assert "gradients" not in [t.name for t in est.persistent]  # nothing of them during the forward
        assert _phase_terms(est, "optimizer step")["gradients"] == 2 * PHI_7B // 4
        assert _phase_terms(est, "backward end")["zero/reduce_bucket"] == bucket
    assert _phase_terms(one, "backward end")["gradients"] == 2 * PHI_7B  # before the epilogue frees them
    assert _phase_terms(two, "backward end")["gradients"] == 2 * PHI_7B // 4
    assert next(t for t in three.persistent if t.name == "gradients").bytes == 2 * PHI_7B // 4
    forward = [next(p for p in e.phases if p.name == "forward end") for e in (one, two)]
    assert one.phase_total(forward[0]) == two.phase_total(forward[1])
    assert three.peak_bytes <= two.peak_bytes <= one.peak_bytes
    # accumulating over micro-batches, ZeRO-2's averaged_gradients outlive each backward
    accumulating = _train(precision="bf16-mixed", dp=4, zero=2, grad_accum=4)
    assert next(t for t in accumulating.persistent if t.name == "gradients").bytes == 2 * PHI_7B // 4


def test_zero_2_never_above_zero_1_in_the_reported_recipe() -> None:
    # the finding's reproducer: ZeRO-2 was estimated 7.7 GiB above ZeRO-1 (its partition held through the
    # forward); under DeepSpeed's allocation both peak in the loss backward with the same tensors live
    kw = {"model": "llama-3.1-8b", "seq": 4096, "precision": "amp", "optimizer": "adafactor", "dp": 4}
    one, two = _train(zero=1, **kw), _train(zero=2, **kw)
    assert two.peak_bytes <= one.peak_bytes


def test_fsdp_matches_the_traced_fsdp2_run_within_two_percent() -> None:
    # notes §2c: FSDP2, 8 ranks, bf16, Llama-2-7B, b=1, s=2048, after a warm-up step: 19,188,161,172 B.
    est = _train(precision="bf16", dp=8, fsdp="full", batch=1, seq=2048, nccl_buffers=False)  # a trace: no NCCL
    assert est.peak_bytes == pytest.approx(19_188_161_172, rel=0.02)
    assert _bytes(est, "optimizer/states") == 4 * PHI_7B // 8


@pytest.mark.parametrize("fsdp", ["full", "hybrid"])
def test_fsdp_head_backward_holds_one_loss_chunk_of_logits_gradient(fsdp: str) -> None:
    # W3: the head's backward holds the logits' gradient; a chunked loss builds logits one chunk at a time,
    # so it holds one chunk's (min(chunk, T) tokens), the full loss all T. Llama-2-7B, bf16-mixed: compute
    # 2 B; b 4 x s 8192 = T 32,768 tokens.
    kw = {"dp": 8, "fsdp": fsdp, "batch": 4, "seq": 8192, "recompute": "full"}
    if fsdp == "hybrid":
        kw["fsdp_shard"] = 4
    T = 4 * 8192
    full = next(p for p in _train(**kw).phases if p.name == "backward (head)")
    assert next(t for t in full.transient if t.name == "loss/logits_grad").bytes == T * V * 2
    for chunk in (1024, 8192, 65536):
        est = _train(loss="chunked", loss_chunk=chunk, **kw)
        head = next(p for p in est.phases if p.name == "backward (head)")
        grad = next(t for t in head.transient if t.name == "loss/logits_grad")
        assert grad.bytes == min(chunk, T) * V * 2
        assert head.bytes - grad.bytes == full.bytes - T * V * 2  # nothing else in the phase moves


def test_lora_adapters_by_hand() -> None:
    est = _train(precision="bf16-mixed", peft="lora", lora_r=16, lora_targets=("q_proj", "v_proj"))
    adapters = L * 2 * 16 * (H + H)  # q_proj and v_proj: r x (in + out) in every layer
    assert adapters == 8_388_608
    assert _bytes(est, "weights/lora") == 4 * adapters  # fp32, peft's autocast_adapter_dtype
    assert _bytes(est, "gradients") == 4 * adapters
    assert _bytes(est, "optimizer/states") == 8 * adapters
    assert _bytes(est, "optimizer/master_weights") == 0  # the fp32 adapters are their own master copy
    frozen = sum(t.bytes for t in est.persistent if t.name.startswith("weights/") and t.name != "weights/lora")
    assert frozen == 2 * PHI_7B  # frozen base in bf16


def test_all_linear_lora_counts_every_projection() -> None:
    est = _train(peft="lora", lora_r=8, lora_targets=("all-linear",))
    per_layer = 8 * ((H + H) * 4 + (H + FFN) * 2 + (FFN + H))  # q, k, v, o; gate, up; down
    assert _bytes(est, "weights/lora") == 4 * L * per_layer


def test_qlora_base_is_nf4_with_fp32_embeddings_and_head() -> None:
    spec = catalog_spec("llama-2-7b")
    est = _train(peft="qlora", lora_targets=("all-linear",), recompute="full", double_quant=True)
    assert _bytes(est, "weights/embeddings") == V * H * 4
    assert _bytes(est, "weights/head") == V * H * 4
    assert _bytes(est, "weights/norms") == (2 * L + 1) * H * 4
    # NF4 with double quantization: 4 bits + one 8-bit absmax per 64 + one fp32 per 256 absmaxes
    nf4 = sum(
        get_format("nf4-dq").tensor_bytes(g, spec, 4).bytes for g in parameter_groups(spec) if g.category == "mlp"
    )
    assert _bytes(est, "weights/mlp") == nf4
    assert nf4 == pytest.approx(3 * L * H * FFN * (0.5 + 1 / 64 + 4 / (64 * 256)), rel=1e-3)
    assert _bytes(est, "qlora/dequantized_weight") == H * FFN * 2  # the largest layer matrix in bf16


def test_adamw_8bit_states_by_hand() -> None:
    est = _train(precision="bf16-mixed", optimizer="adamw-8bit")
    big = PHI_7B - (2 * L + 1) * H  # every matrix has >= 4096 elements; the norm vectors (4096) too
    blocks = sum(-(-n // 256) * k for n, k in ((V * H, 2), (H * H, 4 * L), (H * FFN, 3 * L), (H, 2 * L + 1)))
    assert big + (2 * L + 1) * H == PHI_7B
    assert _bytes(est, "optimizer/states") == 2 * PHI_7B + 2 * 4 * blocks


def test_lomo_keeps_no_gradients_and_no_states() -> None:
    est = _train(precision="bf16-mixed", optimizer="lomo")
    assert _bytes(est, "gradients") == 0 and _bytes(est, "optimizer/states") == 0
    assert _bytes(est, "optimizer/lomo_gradient") == V * H * 2  # the largest tensor's gradient, one at a time


def test_tensor_parallel_pads_the_vocabulary_to_128_t() -> None:
    est = _train(tp=8)
    padded = -(-V // (128 * 8)) * 128 * 8  # Megatron: 32,000 -> 32,768
    assert _bytes(est, "weights/embeddings") == padded // 8 * H * 2
    assert _bytes(est, "weights/attention") == 4 * H * H * L // 8 * 2
    assert _bytes(est, "weights/norms") == (2 * L + 1) * H * 2  # replicated
    assert _bytes(est, "loss/backward") == 8 * 2048 * (padded // 8)  # vocab-parallel cross entropy, T = 2048


def test_pipeline_stages_hold_p_minus_k_micro_batches_and_interleaving_adds_korthikanti_factor() -> None:
    spec = catalog_spec("llama-2-70b")
    base = TrainSetup.from_flat(pp=4, grad_accum=8, tp=8, **NO_OVERHEAD)
    stages = estimate_stages(spec, base)
    acts = [_bytes(e, "activations/mlp/intermediate") for e in stages]  # 80 layers -> 20 a stage
    assert [a * 4 // acts[0] for a in acts] == [4, 3, 2, 1]  # stage k keeps p - k micro-batches
    assert _bytes(stages[0], "weights/embeddings") > 0 and _bytes(stages[-1], "weights/embeddings") == 0
    assert _bytes(stages[-1], "weights/head") > 0 and _bytes(stages[0], "weights/head") == 0
    assert _bytes(stages[-1], "loss/backward") > 0 and _bytes(stages[0], "loss/backward") == 0
    inter = estimate_stages(spec, TrainSetup.from_flat(pp=4, grad_accum=8, tp=8, interleave=2, **NO_OVERHEAD))
    ratio = _bytes(inter[0], "activations/mlp/intermediate") / acts[0]
    assert ratio == pytest.approx(1 + (4 - 1) / (4 * 2))  # Korthikanti et al. 2022, eq. (5)


def test_full_recompute_keeps_one_input_per_layer() -> None:
    est = _train(recompute="full", batch=2, seq=4096)
    assert _bytes(est, "activations/checkpoints") == L * 2 * 4096 * H * 2


def test_gradient_accumulation_keeps_gradients_through_the_forward() -> None:
    est = _train(precision="bf16", grad_accum=4)
    assert "gradients" in [t.name for t in est.persistent]
    forward = next(p for p in est.phases if p.name == "forward end")
    assert sum(t.bytes for t in est.persistent) + forward.bytes >= 2 * PHI_7B * 2  # weights + gradients at least


def test_chunked_cross_entropy_bounds_the_logits() -> None:
    full = _train(batch=4, seq=4096)
    chunked = _train(batch=4, seq=4096, loss="chunked", loss_chunk=1024)
    assert _bytes(full, "loss/backward") == 8 * 4 * 4096 * V
    assert _bytes(chunked, "loss/backward") == 12 * 1024 * V
    assert chunked.peak_bytes < full.peak_bytes


def test_offload_moves_optimizer_states_to_host() -> None:
    est = _train(precision="bf16-mixed", dp=8, zero=2, offload="optimizer")
    host = {t.name: t.bytes for t in est.host}
    assert host["optimizer/states"] == 8 * PHI_7B // 8 and host["optimizer/master_weights"] == 4 * PHI_7B // 8
    assert "optimizer/states" not in [t.name for t in est.persistent]


def test_expert_parallel_states_partition_over_their_own_replicas() -> None:
    spec = catalog_spec("mixtral-8x7b")
    est = estimate_training(spec, TrainSetup.from_flat(dp=8, ep=8, zero=1, **NO_OVERHEAD))
    experts = sum(g.count for g in parameter_groups(spec) if g.per_expert)
    dense = sum(g.count for g in parameter_groups(spec)) - experts
    # dense states shard over 8 data-parallel ranks; each expert lives on one rank of 8, so it has 1 replica
    assert _bytes(est, "optimizer/states") == pytest.approx(8 * (dense / 8 + experts / 8), rel=1e-9)
    router = sum(g.count for g in parameter_groups(spec) if g.name == "experts.router")  # replicated
    assert _bytes(est, "weights/experts") == pytest.approx(2 * (experts / 8 + router), rel=1e-9)


def test_peak_is_the_largest_phase_and_its_terms_add_up() -> None:
    for est in (_train(), _train(peft="lora", recompute="full"), _train(dp=8, zero=3, batch=4)):
        persistent = sum(t.bytes for t in est.persistent)
        assert est.peak_bytes == max(persistent + p.bytes for p in est.phases)
        assert est.peak_bytes == sum(t.bytes for t in est.terms)


@pytest.mark.parametrize(
    ("kw", "error", "field"),
    [
        ({"tp": 3}, InvalidLayoutError, "tp (3) must divide num_attention_heads"),
        ({"pp": 33}, InvalidLayoutError, "pp (33) cannot exceed the number of layers (32)"),
        ({"zero": 1}, InvalidLayoutError, "dp must be >= 2"),
        ({"ep": 2, "dp": 2}, InvalidLayoutError, "ep (2) needs a mixture-of-experts model"),
        ({"peft": "lora", "lora_targets": ("c_attn",)}, InvalidWorkloadError, "lora_targets: c_attn not in"),
        ({"freeze_layers": 40}, InvalidLayoutError, "freeze_layers (40)"),
    ],
)
def test_impossible_setups_name_the_field(kw: dict[str, object], error: type[Exception], field: str) -> None:
    with pytest.raises(error, match=field.replace("(", r"\(").replace(")", r"\)")):
        _train(**kw)


def test_tp_must_divide_kv_heads_or_be_divided_by_them() -> None:
    # Qwen2-7B: 28 query heads, 4 KV heads; tp 7 divides 28 but neither divides 4 nor is divided by it
    with pytest.raises(InvalidLayoutError, match=r"tp \(7\) and num_key_value_heads \(4\)"):
        _train("qwen2-7b", tp=7)


def test_deepseek_routers_stay_fp32_under_a_bf16_load_and_not_under_a_blanket_cast() -> None:
    # DeepSeek-V2-Lite: 64 routed experts, h 2048, 27 layers of which the first is dense: 26 routers of 64 x 2048.
    router = 64 * 2048 * 26
    bf16 = _train("deepseek-v2-lite", precision="bf16", seq=256)  # transformers keeps gate.weight in fp32
    mixed = _train("deepseek-v2-lite", precision="bf16-mixed", seq=256)  # DeepSpeed casts the module to bf16
    assert _bytes(bf16, "weights/experts") - _bytes(mixed, "weights/experts") == router * (4 - 2)
    trainable = hf_param_count(dict(models()["deepseek-v2-lite"].config))  # transformers on the meta device
    assert _bytes(bf16, "gradients") == 2 * trainable + 2 * router  # fp32 gradients for the fp32 routers
    assert _bytes(bf16, "optimizer/states") == 2 * (2 * trainable + 2 * router)  # AdamW states follow the param
    assert _bytes(mixed, "gradients") == 2 * trainable
    assert _bytes(mixed, "optimizer/master_weights") == 4 * trainable
