"""Issue 14's implementation knobs against arithmetic written out here from the frameworks' source.

Llama-2-7B shapes (h 4096, 32 layers, V 32000, intermediate 11008); every expected value is computed in the
test from shapes and the rule it names, not read from the estimator.
"""

from __future__ import annotations

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


def test_liger_chunk_rule_and_saved_gradients() -> None:
    # chunk = next_power_of_2(ceil(BT / ceil(V / H))): ceil(32000 / 4096) = 8, 4096 / 8 = 512
    est = _train(loss="liger", **BF16)
    assert _bytes(est, "loss/logits") == 512 * V * 2
    assert _bytes(est, "activations/loss") == (2 * H + 4) * T  # grad_input (bf16) + fp32 loss_1d
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
        ({"compile": True}, "compile: what inductor saves"),
    ],
)
def test_unsupported_knob_combinations_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidWorkloadError, match=message):
        _train(**kw)
