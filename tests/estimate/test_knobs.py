"""Issue 14's implementation knobs against arithmetic written out here from the frameworks' source.

Llama-2-7B shapes (h 4096, 32 layers, V 32000, intermediate 11008); every expected value is computed in the
test from shapes and the rule it names, not read from the estimator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate
from vramwise.estimate.train.training import estimate_training
from vramwise.formats import get_format
from vramwise.spec.load import catalog_spec
from vramwise.spec.params import parameter_groups
from vramwise.workload import TrainSetup

H, L, V, FFN = 4096, 32, 32000, 11008  # Llama-2-7B
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}
QV = ("q_proj", "v_proj")


def _bytes(est: Estimate, name: str) -> int:
    try:
        return est.term(name).bytes
    except KeyError:
        return 0


def _train(model: str = "llama-2-7b", **kw: object) -> Estimate:
    return estimate_training(catalog_spec(model), TrainSetup.from_flat(**{**NO_OVERHEAD, **kw}))


def _phase(est: Estimate, name: str) -> int:
    return next(p.bytes for p in est.phases if p.name == name)


# --- adapter_dtype, double_quant, lora-8bit


def test_bf16_adapters_halve_the_adapter_states_and_keep_no_fp32_input_cast() -> None:
    # torchtune LoRALinear: lora_a / lora_b built in the model dtype (bf16), AdamW states zeros_like(param): bf16
    kw = {"precision": "bf16", "peft": "lora", "lora_r": 16, "lora_targets": QV, "batch": 1, "seq": 1024}
    fp32, bf16 = _train(**kw), _train(**kw, adapter_dtype="bf16")
    adapters = L * 2 * 16 * (H + H)
    assert _bytes(fp32, "weights/lora") == 4 * adapters
    assert _bytes(bf16, "weights/lora") == 2 * adapters
    assert _bytes(bf16, "gradients") == 2 * adapters
    assert _bytes(bf16, "optimizer/states") == 2 * 2 * adapters  # exp_avg and exp_avg_sq in bf16
    assert _train(**kw, adapter_dtype="fp32").peak_bytes == fp32.peak_bytes  # auto is peft's fp32
    T = 1024
    # peft: q and v each cast the layer's input to fp32 (4h) and keep x·A in fp32 (4r): two adapters a layer
    assert _bytes(fp32, "activations/lora") == L * T * 2 * (4 * H + 4 * 16)
    # bf16: the adapters keep the bf16 input itself, once (shared by q and v), and x·A in bf16
    assert _bytes(bf16, "activations/lora") == L * T * 2 * 2 * 16
    assert _bytes(bf16, "activations/attention/input") == L * T * 2 * H


def test_double_quant_is_off_by_default_as_in_bitsandbytesconfig() -> None:
    spec = catalog_spec("llama-2-7b")
    plain, dq = _train(peft="qlora"), _train(peft="qlora", double_quant=True)
    mlp = [g for g in parameter_groups(spec) if g.category == "mlp"]
    nf4 = sum(get_format("nf4").tensor_bytes(g, spec, 4).bytes for g in mlp)
    assert _bytes(plain, "weights/mlp") == nf4
    # 4 bits + one fp32 absmax per 64 elements, against 4 bits + 8-bit absmax per 64 + fp32 per 256 absmaxes
    assert nf4 == pytest.approx(3 * L * H * FFN * (0.5 + 4 / 64), rel=1e-3)
    dq_mlp = _bytes(dq, "weights/mlp")
    assert dq_mlp == pytest.approx(3 * L * H * FFN * (0.5 + 1 / 64 + 4 / (64 * 256)), rel=1e-3)


def test_double_quant_needs_qlora() -> None:
    with pytest.raises(InvalidWorkloadError, match=r"double_quant .* needs peft qlora"):
        TrainSetup.from_flat(peft="lora", double_quant=True)


def test_torchtune_qlora_keeps_the_unquantized_parameters_in_bf16() -> None:
    # peft's prepare_model_for_kbit_training casts embeddings, norms and head to fp32; torchtune has no such step
    peft, tune = _train(peft="qlora"), _train(peft="qlora", adapter_dtype="bf16")
    assert _bytes(peft, "weights/embeddings") == V * H * 4
    assert _bytes(tune, "weights/embeddings") == V * H * 2
    assert _bytes(tune, "weights/head") == V * H * 2
    assert _bytes(tune, "weights/norms") == (2 * L + 1) * H * 2


def test_lora_8bit_base_is_llm_int8_and_keeps_its_inputs() -> None:
    spec = catalog_spec("llama-2-7b")
    est = _train(peft="lora-8bit", lora_targets=QV, batch=1, seq=1024)
    # LLM.int8(): one int8 per weight + one fp32 scale (SCB) per output row
    groups = [g for g in parameter_groups(spec) if g.category == "attention"]
    att = sum(get_format("int8").tensor_bytes(g, spec, 4).bytes for g in groups)
    assert _bytes(est, "weights/attention") == att == L * 4 * (H * H + 4 * H)
    assert _bytes(est, "weights/embeddings") == V * H * 4  # k-bit preparation: fp32
    T = 1024
    # MatMul8bitLt saves its input A whenever the input needs a gradient: every linear's input is kept, as in
    # full training (attention input 2h once, o_proj's input is the attention output already kept)
    assert _bytes(est, "activations/attention/input") == L * T * 2 * H
    assert _bytes(est, "activations/mlp/input") == L * T * 2 * H
    # its backward dequantizes the weight to 16 bit: CB.to(dtype_A).mul_(SCB / 127), the largest is gate/up
    assert _bytes(est, "qlora/dequantized_weight") == H * FFN * 2


# --- loss implementations (estimate/train/loss.py), bf16, one sequence of 4096 tokens

T = 4096
BF16 = {"precision": "bf16", "batch": 1, "seq": T}


def test_compute_dtype_loss_keeps_a_bf16_log_softmax() -> None:
    est = _train(loss="compute-dtype", **BF16)
    assert _bytes(est, "activations/loss") == 2 * V * T  # _log_softmax's result in bf16
    assert _bytes(est, "loss/backward") == 2 * 2 * V * T  # nll_loss's gradient and log_softmax's, bf16
    amp = _train(loss="compute-dtype", precision="amp", batch=1, seq=T)
    assert _bytes(amp, "activations/loss") == 4 * V * T  # autocast runs log_softmax in fp32


def test_torchtune_chunked_loss_by_hand() -> None:
    est = _train(loss="torchtune-chunked", **BF16)
    assert _bytes(est, "activations/loss") == 4 * V * T  # every chunk's fp32 log-softmax
    assert _bytes(est, "loss/logits") == 2 * V * T + 4 * V * T // 8  # bf16 chunks + one chunk's fp32 upcast
    assert _bytes(est, "loss/backward") == 8 * V * T // 8  # one chunk's two fp32 gradients
    fwd, loss_bwd = _phase(est, "forward end"), _phase(est, "backward (loss)")
    assert fwd - loss_bwd == (2 * V * T + 4 * V * T // 8) - 8 * V * T // 8  # the forward holds the logits


def test_torchtune_linear_loss_by_hand() -> None:
    est = _train(loss="torchtune-linear", **BF16)
    assert _bytes(est, "activations/loss") == (4 * V + 1) * T  # every chunk's fp32 log-softmax + the bool mask
    assert _bytes(est, "loss/logits") == (2 + 4) * V * T // 8  # one chunk's bf16 logits and fp32 upcast
    assert _bytes(est, "loss/backward") == 8 * V * T // 8
    assert _bytes(est, "loss/head_grad") == V * H * 2  # accumulating from the first chunk's backward
    chunked = _train(loss="torchtune-chunked", **BF16)
    assert _phase(chunked, "forward end") - _phase(est, "forward end") == (2 * V * T + 4 * V * T // 8) - (
        6 * V * T // 8 + T
    )


def test_liger_chunk_rule_and_saved_gradients() -> None:
    # chunk = next_power_of_2(ceil(BT / ceil(V / H))): ceil(32000 / 4096) = 8, 4096 / 8 = 512
    est = _train(loss="liger", **BF16)
    assert _bytes(est, "loss/logits") == 512 * V * 2
    assert _bytes(est, "activations/loss") == 2 * H * T  # grad_input (bf16), saved for backward
    assert _bytes(est, "loss/per_token_loss") == 4 * T  # fp32 loss_1d, a forward transient
    assert _bytes(est, "loss/head_grad") == V * H * 2  # zeros_like(weight), filled in forward
    full = _train(**BF16)
    # the head's input is no longer kept for its gradient (computed in forward)
    assert _bytes(full, "activations/final_norm") - _bytes(est, "activations/final_norm") == 2 * H * T
    lora = _train(loss="liger", peft="lora", lora_targets=QV, **BF16)
    assert _bytes(lora, "loss/head_grad") == 0  # a frozen head: no grad_weight
    # 3000 tokens: ceil(3000 / 8) = 375 -> 512; 100 tokens: 13 -> 16
    assert _bytes(_train(loss="liger", precision="bf16", batch=1, seq=3000), "loss/logits") == 512 * V * 2
    assert _bytes(_train(loss="liger", precision="bf16", batch=1, seq=100), "loss/logits") == 16 * V * 2


def test_cut_cross_entropy_by_hand() -> None:
    est = _train(loss="cce", **BF16)
    assert _bytes(est, "activations/loss") == (4 + 4) * T  # fp32 lse + int32 valid index
    assert _bytes(est, "loss/logit_avg") == 4 * V
    assert _bytes(est, "loss/backward") == 2 * H * T  # de
    assert _bytes(est, "loss/vocab_ordering") == 12 * V
    assert _bytes(est, "loss/head_grad") == V * H * 2  # dc
    lora = _train(loss="cce", peft="lora", lora_targets=QV, **BF16)
    # e is saved even with a frozen head (a LoRA run keeps no head input otherwise)
    plain = _train(peft="lora", lora_targets=QV, **BF16)
    assert _bytes(lora, "activations/final_norm") - _bytes(plain, "activations/final_norm") == 2 * H * T


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"loss": "cce", "precision": "fp32"}, "cce's backward requires bf16/fp16"),
        ({"loss": "liger", "tp": 2}, "liger has no vocabulary-parallel path"),
        ({"compile": True, "attention": "eager"}, "compile: what inductor saves is measured for"),
    ],
)
def test_unsupported_knob_combinations_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidWorkloadError, match=message):
        _train(**kw)


# --- recompute variants (estimate/train/training.py _checkpointed, knobs.py op_sac_saved)


def test_layer_sac_checkpoints_every_nth_layer() -> None:
    none, every2 = _train(**BF16), _train(recompute="layer-sac", recompute_every=2, **BF16)
    # torchtitan: the k-th block (k from 1) is checkpointed when k % 2 == 0: 16 of 32 keep only their input
    assert _bytes(every2, "activations/checkpoints") == 16 * 2 * H * T
    assert _bytes(every2, "activations/norms") * 2 == _bytes(none, "activations/norms")
    assert _bytes(every2, "activations/mlp/intermediate") * 2 == _bytes(none, "activations/mlp/intermediate")
    every5 = _train(recompute="layer-sac", recompute_every=5, **BF16)
    assert _bytes(every5, "activations/checkpoints") == 6 * 2 * H * T  # 5, 10, ..., 30
    full = _train(recompute="full", **BF16)
    assert _bytes(_train(recompute="layer-sac", recompute_every=1, **BF16), "activations/checkpoints") == _bytes(
        full, "activations/checkpoints"
    )


def test_op_sac_saves_the_odd_matmuls_and_the_attention_output() -> None:
    est = _train(recompute="op-sac", **BF16)
    # mm order q, k, v, o, gate, up, down: the 1st, 3rd, 5th and 7th are saved (q, v, gate, down)
    per = 2 * (H + (H + H + FFN + H) + H) + 4 * 32  # input + those outputs + sdpa output, bf16; fp32 lse per head
    assert _bytes(est, "activations/checkpoints") == 32 * per * T
    assert any(p.name == "backward (recompute)" for p in est.phases)


def test_op_sac_refuses_what_it_does_not_model() -> None:
    with pytest.raises(InvalidWorkloadError, match="op-sac counts torchtitan's dense layers"):
        _train("mixtral-8x7b", recompute="op-sac")
    with pytest.raises(InvalidWorkloadError, match="op-sac is modelled for full training"):
        _train(recompute="op-sac", peft="lora", lora_targets=QV)


# --- optimizer in backward (torchtune optimizer_in_bwd)


def test_optimizer_in_backward_keeps_one_gradient() -> None:
    est = _train(optimizer_in_backward=True, optimizer_impl="foreach", precision="bf16", batch=1, seq=16)
    assert _bytes(est, "gradients") == 0
    largest = V * H  # the embedding (and the untied head)
    assert _bytes(est, "optimizer/in_backward_gradient") == largest * 2
    assert _bytes(est, "optimizer/step_transient") == largest * 2  # foreach over one tensor: one bf16 copy
    plain = _train(optimizer_impl="foreach", precision="bf16", batch=1, seq=16)
    assert plain.peak_phase is not None and plain.peak_phase.name == "optimizer step"
    assert est.peak_bytes < plain.peak_bytes


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"grad_accum": 2}, "gradient accumulation is not supported"),
        ({"dp": 2, "zero": 2}, "modelled on one GPU"),
        ({"precision": "bf16-mixed"}, "pure bf16 or fp32"),
    ],
)
def test_optimizer_in_backward_refusals(kw: dict[str, object], message: str) -> None:
    base = {"precision": "bf16", **kw}
    with pytest.raises(InvalidWorkloadError, match=message):
        _train(optimizer_in_backward=True, **base)


# --- fused kernels (Liger) against transformers' composite modules


def test_fused_rmsnorm_saves_its_input_and_rstd() -> None:
    composite, fused = _train(**BF16), _train(norm_impl="fused", **BF16)
    # transformers' LlamaRMSNorm: fp32 input copy (4h), rsqrt (4), the normalised tensor for the weight (2h)
    assert _bytes(composite, "activations/norms") == L * T * 2 * (4 * H + 4 + 2 * H)
    # LigerRMSNormFunction: save_for_backward(X, W, RSTD): bf16 input (2h) and an fp32 rstd (4)
    assert _bytes(fused, "activations/norms") == L * T * 2 * (2 * H + 4)
    # the final norm too (its output, the head's input, is kept for the head's gradient either way)
    assert _bytes(fused, "activations/final_norm") == T * (2 * H + 4 + 2 * H)


def test_fused_swiglu_saves_gate_and_up() -> None:
    composite, fused = _train(**BF16), _train(mlp_impl="fused", **BF16)
    # composite: gate, up, silu(gate) and their product (down_proj's input), bf16
    assert _bytes(composite, "activations/mlp/intermediate") == L * T * 4 * 2 * FFN
    # LigerSiLUMulFunction saves a and b; the product is still down_proj's input
    assert _bytes(fused, "activations/mlp/intermediate") == L * T * 3 * 2 * FFN


def test_fused_kernels_refuse_what_liger_has_no_kernel_for() -> None:
    with pytest.raises(InvalidWorkloadError, match="norm_impl: fused is Liger's RMSNorm"):
        _train("gpt2", norm_impl="fused")
    with pytest.raises(InvalidWorkloadError, match="mlp_impl: fused is Liger's SwiGLU/GeGLU"):
        _train("gpt2", mlp_impl="fused")


# --- activation offloading (torchtune) and float8 (torchao)


def test_activation_offload_keeps_one_layer_on_the_gpu() -> None:
    none, off = _train(**BF16), _train(activation_offload=True, **BF16)
    outside = {"rotary", "inputs", "final_norm", "loss", "embedding_dropout", "attention_mask"}
    fwd = next(p for p in none.phases if p.name == "forward end")
    layers = [t for t in fwd.transient if t.name.startswith("activations/") and t.name[12:] not in outside]
    assert _bytes(off, "activations/offload_in_flight") == sum(t.bytes for t in layers) // L  # one of 32 layers
    assert all(_bytes(off, t.name) == 0 for t in layers)
    assert _bytes(off, "activations/loss") == _bytes(none, "activations/loss")  # the loss stays on the GPU
    ckpt = _train(activation_offload=True, recompute="full", **BF16)
    assert _bytes(ckpt, "activations/offload_in_flight") == 2 * H * T  # one layer's checkpoint


def test_float8_keeps_the_16_bit_inputs_and_adds_one_matmuls_casts() -> None:
    plain, f8 = _train(**BF16), _train(float8=True, **BF16)
    assert _bytes(f8, "activations/mlp/intermediate") == _bytes(plain, "activations/mlp/intermediate")
    assert _bytes(f8, "float8/casts") == 2 * T * FFN  # input and grad_output of the widest matmul, 1 B each
    assert _bytes(f8, "float8/weight_cast") == H * FFN
    with pytest.raises(InvalidWorkloadError, match="float8: torchao's Float8Linear swaps trainable"):
        _train(float8=True, peft="lora", lora_targets=QV)


# --- torch.compile: against the measured CPU runs (bench/compile_saved.py -> bench/data/compile/saved-cpu.json)

COMPILE_DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "compile" / "saved-cpu.json"


def _layer_bytes(spec: object, dtype: str, seq: int, batch: int, **kw: object) -> int:
    """The estimate's saved bytes inside the decoder layers (what the measurement compiled), forward end."""
    setup = TrainSetup.from_flat(batch=batch, seq=seq, precision=dtype, **NO_OVERHEAD, **kw)
    fwd = next(p for p in estimate_training(spec, setup).phases if p.name == "forward end")  # type: ignore[arg-type]
    outside = {"rotary", "inputs", "final_norm", "loss", "embedding_dropout", "attention_mask"}
    return sum(t.bytes for t in fwd.transient if t.name.startswith("activations/") and t.name[12:] not in outside)


def test_compile_saves_what_inductor_saved_on_cpu() -> None:
    from tiny_configs import FAMILIES

    from vramwise.spec.adapters import spec_from_config

    data = json.loads(COMPILE_DATA.read_text())
    for row in data["rows"]:
        spec = spec_from_config(FAMILIES[row["family"]], name=row["family"], source="test")
        eager = _layer_bytes(spec, row["dtype"], data["seq"], data["batch"])
        compiled = _layer_bytes(spec, row["dtype"], data["seq"], data["batch"], compile=True)
        measured = row["eager"] - row["compiled"]  # what inductor recomputes instead of saving
        # exact for Llama, Qwen3 and Phi-3; Gemma's norm keeps 8 B/token/layer more than modelled (0.2% of a layer)
        assert eager - compiled == pytest.approx(measured, abs=8 * spec.num_layers * data["batch"] * data["seq"])


def test_fsdp_head_backward_follows_the_loss() -> None:
    kw = {"dp": 8, "fsdp": "full", "batch": 1, "seq": T}

    def head(est: Estimate) -> dict[str, int]:
        phase = next(p for p in est.phases if p.name == "backward (head)")
        return {t.name: t.bytes for t in phase.transient}

    assert head(_train(**kw))["loss/logits_grad"] == T * V * 2
    assert head(_train(loss="torchtune-chunked", **kw))["loss/logits_grad"] == T * V * 2 // 8  # one chunk
    assert "loss/logits_grad" not in head(_train(loss="cce", **kw))  # no logits ever
    assert head(_train(loss="liger", **kw))["loss/logits_grad"] == 512 * V * 2  # Liger's chunk


@pytest.mark.parametrize(
    "kw", [{"float8": True}, {"recompute": "op-sac"}, {"loss": "liger"}, {"peft": "lora-8bit"}, {"compile": True}]
)
def test_textbook_mode_refuses_the_knobs(kw: dict[str, object]) -> None:
    from vramwise.estimate.train.textbook_mode import textbook_training

    with pytest.raises(InvalidWorkloadError, match="textbook seeds' formulas have no implementation knobs"):
        textbook_training(catalog_spec("llama-2-7b"), TrainSetup.from_flat(mode="textbook", **kw))
