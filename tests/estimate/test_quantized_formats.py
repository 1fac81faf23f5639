"""A checkpoint's quantization_config -> the weights term, to the byte, for every method users meet on the hub.

Oracles: for each method, the bytes its packing code stores for one ``out x in`` linear weight, written out below
from the code named beside it (codes, scales, zeros, g_idx); where transformers builds the quantized model on the
meta device without a GPU library (FineGrainedFP8, BitNet: the quantizer's own module replacement), or its
replacement module alone (FbgemmFp8Linear, EetqLinear), its state dict's bytes as a second oracle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vramwise.cli import main
from vramwise.errors import ConfigError, InvalidWorkloadError
from vramwise.estimate.train.training import estimate_training
from vramwise.estimate.weights import weight_terms
from vramwise.formats import default_format, get_format
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.model import ModelSpec
from vramwise.workload import TrainSetup

# A tiny Llama: h 256, MLP 512, 2 layers, 4 heads of 64, 2 KV heads, vocabulary 1,000, untied, bf16.
H, FFN, L, V, KV = 256, 512, 2, 1000, 128
LLAMA: dict[str, Any] = {
    "model_type": "llama", "vocab_size": V, "hidden_size": H, "intermediate_size": FFN, "num_hidden_layers": L,
    "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
# (out, in) of every linear in one layer: q, k, v, o, gate, up, down
LINEARS = [(H, H), (KV, H), (KV, H), (H, H), (FFN, H), (FFN, H), (H, FFN)]
# embeddings and lm_head (V x h each), two RMSNorms per layer and the final one: all in bf16
KEPT = (2 * V * H + (2 * L + 1) * H) * 2


def _spec(q: dict[str, Any], base: dict[str, Any] = LLAMA) -> ModelSpec:
    return spec_from_config({**base, "quantization_config": q}, name="tiny-q", source="test")


def _weights(q: dict[str, Any]) -> int:
    spec = _spec(q)
    return sum(t.bytes for t in weight_terms(spec, get_format(default_format(spec)), hp_bytes=2))


def _by_hand(one_linear: Callable[[int, int], int]) -> int:
    return L * sum(one_linear(out, n_in) for out, n_in in LINEARS) + KEPT


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# -- one rule per method, as its packing code lays the tensors out -------------------------------------------------
def _nf4(out: int, n_in: int) -> int:
    # bitsandbytes functional.quantize_4bit, blocksize 64: codes two per uint8, one fp32 absmax per 64 elements,
    # and the QuantState's code, the 16-value fp32 map (get_4bit_type)
    return out * n_in // 2 + out * n_in // 64 * 4 + 16 * 4


def _nf4_dq(out: int, n_in: int) -> int:
    # compress_statistics: absmax - offset quantized by quantize_blockwise (blocksize 256): uint8 per block of
    # 64, an fp32 absmax per 256 of those, the 256-value fp32 dynamic map, the fp32 offset; and the 4-bit code
    blocks = out * n_in // 64
    return out * n_in // 2 + blocks + _ceil(blocks, 256) * 4 + 256 * 4 + 4 + 16 * 4


def _llm_int8(out: int, n_in: int) -> int:
    return out * n_in + out * 4  # Int8Params: int8 weight, SCB fp32 per output row


def _gptq(bits: int, group: int | None) -> Callable[[int, int], int]:
    # GPTQModel/AutoGPTQ QuantLinear: qweight int32 (in*bits/32, out), qzeros int32 (groups, out*bits/32),
    # scales fp16 (groups, out), g_idx int32 (in,); group_size -1: one group
    def rule(out: int, n_in: int) -> int:
        groups = 1 if group is None else _ceil(n_in, group)
        return n_in * bits // 32 * out * 4 + groups * out * bits // 32 * 4 + groups * out * 2 + n_in * 4

    return rule


def _awq(out: int, n_in: int) -> int:
    # AutoAWQ WQLinear_GEMM 4-bit g128: qweight int32 (in, out/8), qzeros int32 (in/128, out/8),
    # scales fp16 (in/128, out)
    return n_in * out // 8 * 4 + n_in // 128 * out // 8 * 4 + n_in // 128 * out * 2


def _fp8_block(out: int, n_in: int) -> int:
    return out * n_in + _ceil(out, 128) * _ceil(n_in, 128) * 4  # FP8Linear: fp8 weight, fp32 weight_scale_inv


def _fp8_channel(out: int, n_in: int) -> int:
    return out * n_in + out * 4  # FbgemmFp8Linear: fp8 weight, fp32 weight_scale (out, 1)


def _ct_int4_g128(out: int, n_in: int) -> int:
    # pack-quantized: weight_packed int32 (out, in/8), weight_scale bf16 (out, in/128), weight_shape int32 (2,)
    return out * n_in // 8 * 4 + out * n_in // 128 * 2 + 8


def _ct_w8_channel(out: int, n_in: int) -> int:
    # int-quantized / float-quantized per channel, symmetric: 8-bit weight, weight_scale bf16 (out, 1)
    return out * n_in + out * 2


def _torchao_int4(out: int, n_in: int) -> int:
    return out * n_in // 2 + n_in // 128 * out * 2 * 2  # int4 two per byte, scale_and_zero bf16 (in/128, out, 2)


def _hqq_4bit_g64(out: int, n_in: int) -> int:
    return out * n_in // 2 + out * n_in // 64 * 2 * 2  # W_q uint8 two per byte, scale and zero bf16 per 64


def _nvfp4(out: int, n_in: int) -> int:
    return out * n_in // 2 + out * n_in // 16 + 4  # uint8 (out, in/2), fp8 scale per 16, fp32 global scale


def _bitnet(out: int, n_in: int) -> int:
    return out // 4 * n_in + 2  # BitLinear: uint8 (out/4, in), weight_scale (1,) bf16


def _eetq(out: int, n_in: int) -> int:
    return out * n_in + out * 2  # EetqLinear: int8 (in, out), fp16 weight_scales (out,)


GPTQ_CFG = {"quant_method": "gptq", "bits": 4, "group_size": 128}
CT_INT4 = {"weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}}
CT_W8A8 = {
    "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True},
    "input_activations": {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
}
CT_FP8 = {
    "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
    "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True},
}


def _ct(fmt: str, scheme: dict[str, Any]) -> dict[str, Any]:
    group = {"targets": ["Linear"], **scheme}
    return {"quant_method": "compressed-tensors", "format": fmt, "config_groups": {"group_0": group},
            "ignore": ["lm_head"], "quantization_status": "compressed"}  # fmt: skip


BNB4 = {"quant_method": "bitsandbytes", "load_in_4bit": True}
CASES = [
    ("bnb-nf4", {**BNB4, "bnb_4bit_quant_type": "nf4"}, "nf4", _nf4),
    ("bnb-fp4", BNB4, "fp4", _nf4),  # BitsAndBytesConfig's default quant type is fp4: the same layout
    ("bnb-nf4-dq", {**BNB4, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}, "nf4-dq", _nf4_dq),
    ("bnb-int8", {"quant_method": "bitsandbytes", "load_in_8bit": True}, "int8", _llm_int8),
    ("gptq-g128", {"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq-4bit-g128", _gptq(4, 128)),
    ("gptq-g-1-act", {"quant_method": "gptq", "bits": 4, "group_size": -1, "desc_act": True}, "gptq-4bit-g-1",
     _gptq(4, None)),
    ("gptq-8bit-g32", {"quant_method": "gptq", "bits": 8, "group_size": 32, "sym": False}, "gptq-8bit-g32",
     _gptq(8, 32)),
    ("awq", {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
     "awq-4bit-g128", _awq),
    ("fp8-block", {"quant_method": "fp8", "weight_block_size": [128, 128]}, "fp8-block", _fp8_block),
    ("fbgemm-fp8", {"quant_method": "fbgemm_fp8"}, "fp8-channel", _fp8_channel),
    ("ct-int4-group", _ct("pack-quantized", CT_INT4), "ct-pack4-g128", _ct_int4_g128),
    ("ct-w8a8", _ct("int-quantized", CT_W8A8), "ct-int8-channel", _ct_w8_channel),
    ("ct-fp8-dynamic", _ct("float-quantized", CT_FP8), "ct-fp8-channel", _ct_w8_channel),
    ("ct-nvfp4", {**_ct("nvfp4-pack-quantized", CT_INT4)}, "nvfp4", _nvfp4),
    ("torchao-int4", {"quant_method": "torchao", "quant_type": {"default": {
        "_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"group_size": 128}}}}, "torchao-int4-g128",
     _torchao_int4),
    ("hqq", {"quant_method": "hqq", "quant_config": {"weight_quant_params": {"nbits": 4, "group_size": 64}}},
     "hqq-4bit-g64", _hqq_4bit_g64),
    ("bitnet", {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}, "bitnet",
     _bitnet),
    ("eetq", {"quant_method": "eetq", "weights": "int8"}, "eetq-int8", _eetq),
    ("auto-round", {"quant_method": "auto-round", "bits": 4, "group_size": 128, "packing_format": "auto_round:gptq"},
     "gptq-4bit-g128", _gptq(4, 128)),
]  # fmt: skip


@pytest.mark.parametrize(("q", "fmt", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_weights_equal_the_packing_code_by_hand(q: dict[str, Any], fmt: str, rule: Callable[[int, int], int]) -> None:
    assert default_format(_spec(q)) == fmt
    assert _weights(q) == round(_by_hand(rule))


def test_mxfp4_stores_only_the_routed_experts() -> None:
    # transformers integrations/mxfp4.py Mxfp4GptOssExperts: gate_up_proj uint8 (E, 2i, h/2), two E2M1 codes per
    # byte, plus the checkpoint's (E, 2i, h/32) E8M0 scales (gate_up_proj_scales, handed to the triton kernels);
    # down_proj likewise; attention, router, embeddings and head stay bf16.
    oss = {
        "model_type": "gpt_oss", "vocab_size": V, "hidden_size": H, "intermediate_size": FFN, "num_hidden_layers": L,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "num_local_experts": 4,
        "num_experts_per_tok": 2, "torch_dtype": "bfloat16", "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"],
    }  # fmt: skip
    spec = _spec({"quant_method": "mxfp4"}, oss)
    packed = sum(t.bytes for t in weight_terms(spec, get_format(default_format(spec)), hp_bytes=2))
    plain = sum(t.bytes for t in weight_terms(spec, get_format("bf16"), hp_bytes=2))
    experts = L * 4 * (2 * FFN * H + H * FFN)  # gate_up (2i x h) and down (h x i) per expert
    biases = L * 4 * (2 * FFN + H)  # Mxfp4GptOssExperts.__init__: gate_up_proj_bias, down_proj_bias in fp32
    assert packed == plain - experts * 2 + experts // 2 + experts // 32 + biases * 2


def _meta_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _quantized_on_meta(q: dict[str, Any]) -> int:
    """transformers' own quantizer replaces the linears of the tiny Llama on the meta device (no GPU library)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers import AutoHfQuantizer

    config = AutoConfig.for_model(**{k: v for k, v in LLAMA.items() if k != "torch_dtype"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    AutoHfQuantizer.from_config(q, pre_quantized=True)._process_model_before_weight_loading(model)
    return _meta_bytes(model)


@pytest.mark.parametrize(
    "q",
    [
        {"quant_method": "fp8", "weight_block_size": [128, 128]},
        {"quant_method": "fp8", "weight_block_size": [64, 128]},
        {"quant_method": "fp8", "weight_block_size": None},
        {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"},
    ],
    ids=["fp8-128x128", "fp8-64x128", "fp8-per-tensor", "bitnet"],
)
def test_weights_equal_transformers_quantized_model_on_meta(q: dict[str, Any]) -> None:
    assert _weights(q) == _quantized_on_meta(q)


def test_fbgemm_and_eetq_linears_on_meta() -> None:
    torch = pytest.importorskip("torch")
    from transformers.integrations.eetq import EetqLinear
    from transformers.integrations.fbgemm_fp8 import FbgemmFp8Linear

    with torch.device("meta"):
        for out, n_in in set(LINEARS):
            assert _meta_bytes(FbgemmFp8Linear(n_in, out, bias=False)) == _fp8_channel(out, n_in)
            assert _meta_bytes(EetqLinear(n_in, out, bias=False)) == _eetq(out, n_in)


# -- refusals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "field"),
    [
        ({"quant_method": "aqlm", "in_group_size": 8, "num_codebooks": 1}, "quantization_config.quant_method"),
        ({"quant_method": "vptq"}, "quantization_config.quant_method"),
        ({"quant_method": "quanto", "weights": "int8"}, "quantization_config.quant_method"),
        (_ct("marlin-24", CT_INT4), "quantization_config.format"),
        ({"quant_method": "compressed-tensors", "format": "pack-quantized",
          "config_groups": {"a": CT_INT4, "b": CT_W8A8}}, "quantization_config.config_groups"),
        ({"quant_method": "hqq", "quant_config": {"weight_quant_params": {"nbits": 3, "group_size": 64}}},
         "quantization_config.quant_config.weight_quant_params.nbits"),
        ({"quant_method": "torchao", "quant_type": {"default": {"_type": "Int8DynamicActivationInt4WeightConfig"}}},
         "quantization_config.quant_type"),
        ({**GPTQ_CFG, "dynamic": {"+:.*down_proj": {"bits": 8}}}, "quantization_config.dynamic"),
        ({**GPTQ_CFG, "checkpoint_format": "marlin"}, "quantization_config.checkpoint_format"),
        ({**GPTQ_CFG, "lm_head": True}, "quantization_config.lm_head"),
        ({"quant_method": "compressed-tensors", "format": "pack-quantized",
          "config_groups": {"a": {**CT_INT4, "targets": ["re:.*mlp.*"]}}}, "quantization_config.config_groups.targets"),
        ({"quant_method": "awq", "bits": 4, "version": "gemv"}, "quantization_config.version"),
        ({**_ct("pack-quantized", CT_INT4), "ignore": []}, "quantization_config.ignore"),
    ],
)  # fmt: skip
def test_methods_not_read_are_refused_naming_the_field(q: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        default_format(_spec(q))
    assert info.value.field == field and "\n" not in str(info.value) and "--format" in str(info.value)


@pytest.mark.parametrize(
    "q",
    [
        {"quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_has_fp16_weight": True},
        {"quant_method": "fp8", "dequantize": True},
        {"quant_method": "mxfp4", "dequantize": True},
        {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"},
        _ct("dense", CT_INT4),
    ],
    ids=["int8-fp16-weights", "fp8-dequantize", "mxfp4-dequantize", "bitnet-online", "ct-dense"],
)
def test_configs_that_keep_16_bit_weights_read_as_16_bit(q: dict[str, Any]) -> None:
    # each config class documents these as loading (or keeping) the 16-bit weights
    assert default_format(_spec(q)) == "bf16"


def test_unknown_quant_method_exits_2_naming_the_field_and_the_methods_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "quantization_config": {"quant_method": "zzq"}}))
    assert main(["infer", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "quantization_config.quant_method" in err and "'zzq'" in err
    assert all(m in err for m in ("gptq", "awq", "bitsandbytes", "compressed-tensors", "fp8", "hqq", "torchao"))


# -- training follows the stored format ----------------------------------------------------------------------------
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128}


def test_full_fine_tuning_of_a_quantized_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # transformers trainer_utils.validate_quantization_for_training: "You cannot perform fine-tuning on purely
    # quantized models. Please attach trainable adapters"
    with pytest.raises(InvalidWorkloadError, match="adapters") as info:
        estimate_training(_spec(GPTQ), TrainSetup(seq=64))
    assert info.value.field == "peft" and "--peft lora" in str(info.value)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, "quantization_config": GPTQ}))
    assert main(["train", str(path), "--seq", "64"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_lora_on_a_quantized_checkpoint_keeps_the_stored_layout() -> None:
    est = estimate_training(_spec(GPTQ), TrainSetup.from_flat(seq=64, peft="lora"))
    layers = sum(t.bytes for t in est.persistent if t.name in ("weights/attention", "weights/mlp"))
    assert layers == L * sum(_gptq(4, 128)(out, n_in) for out, n_in in LINEARS)
    assert est.term("qlora/dequantized_weight").bytes == FFN * H * 2  # one gate/up weight in 16 bit for its matmul
    assert any("stay gptq-4bit-g128" in n for n in est.notes)


def test_methods_transformers_cannot_train_are_refused_or_dequantized() -> None:
    with pytest.raises(InvalidWorkloadError, match="is_trainable is False"):
        estimate_training(_spec({"quant_method": "fbgemm_fp8"}), TrainSetup.from_flat(seq=64, peft="lora"))
    # fp8 (FineGrainedFP8Config(dequantize=True)) trains fully as a 16-bit model, with a note saying so
    est = estimate_training(_spec({"quant_method": "fp8"}), TrainSetup(seq=64))
    plain = estimate_training(spec_from_config(LLAMA, name="tiny", source="test"), TrainSetup(seq=64))
    assert est.bytes_of("weights") == plain.bytes_of("weights")
    assert any("dequantize=True" in n for n in est.notes)


# -- the dequantization workspace -----------------------------------------------------------------------------------
def test_bnb_4bit_prefill_dequantizes_one_weight_and_decode_does_not() -> None:
    from vramwise.estimate.inference import estimate_inference
    from vramwise.estimate.term import PhaseKind
    from vramwise.workload import InferSetup

    spec = _spec({**BNB4, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16"})
    est = estimate_inference(spec, InferSetup(context=64, new_tokens=8))
    # bitsandbytes MatMul4Bit.forward: F.dequantize_4bit(B).to(A.dtype), the largest (gate/up 512 x 256) in bf16
    phases = {p.kind: {t.name: t.bytes for t in p.transient} for p in est.phases}
    assert phases[PhaseKind.PREFILL_LAYER]["activations/dequantized_weight"] == FFN * H * 2
    # compute dtype float32 (BitsAndBytesConfig's default when the config omits it): the bf16 dequantized weight
    # and its fp32 copy (.to(A.dtype)) are both alive during the cast; the note names the fp32 input/output copies
    fp32 = estimate_inference(_spec({**BNB4, "bnb_4bit_quant_type": "nf4"}), InferSetup(context=64))
    assert fp32.term("activations/dequantized_weight").bytes == FFN * H * (2 + 4)
    assert any("bnb_4bit_compute_dtype float32" in n for n in fp32.notes)
    assert "activations/dequantized_weight" not in phases[PhaseKind.DECODE]  # one token: the fused gemv_4bit
    gptq = estimate_inference(_spec(GPTQ), InferSetup(context=64, new_tokens=8))  # fused kernels: no copy
    assert all("activations/dequantized_weight" not in {t.name for t in p.transient} for p in gptq.phases)


def test_in_layer_modules_kept_unquantized_are_named_in_a_note() -> None:
    from vramwise.estimate.inference import estimate_inference
    from vramwise.workload import InferSetup

    # Llama-4-style fp8: attention kept in bf16 by name; routers, lm_head and vision towers are kept anyway
    skips = ["lm_head", "re:.*mlp.gate$", "vision_model", "model.layers.0.self_attn.q_proj"]
    spec = _spec({"quant_method": "fp8", "modules_to_not_convert": skips})
    assert spec.quant_kept == ("model.layers.0.self_attn.q_proj",)
    notes = estimate_inference(spec, InferSetup(context=64)).notes
    assert any("model.layers.0.self_attn.q_proj" in n and "headers" in n for n in notes)
    assert _spec({"quant_method": "fp8", "modules_to_not_convert": skips[:3]}).quant_kept == ()


def test_a_multimodal_wrapper_passes_its_quantization_config_to_the_language_model() -> None:
    # Gemma-3 / Qwen2.5-VL GPTQ and AWQ repos keep quantization_config and the dtype beside text_config
    text = {**{k: v for k, v in LLAMA.items() if k != "torch_dtype"}, "model_type": "gemma3_text", "head_dim": 64}
    wrapper = {"model_type": "gemma3", "text_config": text, "torch_dtype": "bfloat16", "quantization_config": GPTQ}
    spec = spec_from_config(wrapper, name="mm", source="test")
    assert (default_format(spec), spec.stored_dtype) == ("gptq-4bit-g128", "bf16")


def test_a_gptq_folder_is_estimated_in_its_format_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # newcomer trial #22: a GPTQ folder was estimated as fp16
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "quantization_config": GPTQ}))
    assert main(["infer", str(tmp_path), "--json"]) == 0
    terms = {t["name"]: t["bytes"] for t in json.loads(capsys.readouterr().out)["terms"]}
    assert terms["weights/mlp"] == L * sum(_gptq(4, 128)(o, i) for o, i in LINEARS[4:])


def test_verify_refuses_a_quantized_base(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "quantization_config": GPTQ}))
    for argv in (["verify", str(tmp_path), "--peft", "lora"], ["verify", str(tmp_path), "--infer"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "gptq-4bit-g128" in err


MIXTRAL = {**LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}


def test_bitsandbytes_leaves_fused_moe_experts_in_16_bit() -> None:
    # transformers integrations/bitsandbytes.py replace_with_bnb_linear replaces `type(module) is nn.Linear` (and
    # Conv1D) only; MixtralExperts holds gate_up_proj (E, 2i, h) and down_proj (E, h, i) as nn.Parameter
    from vramwise.estimate.inference import estimate_inference
    from vramwise.workload import InferSetup

    spec = _spec({**BNB4, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16"}, MIXTRAL)
    est = estimate_inference(spec, InferSetup(context=64))
    assert est.bytes_of("weights/experts") == L * 4 * 3 * FFN * H * 2 + L * 4 * H * 2  # experts + router, bf16
    assert est.bytes_of("weights/attention") == L * sum(_nf4(o, i) for o, i in LINEARS[:4])
    assert any("fused MoE experts stay 16-bit" in n for n in est.notes)
    dense = estimate_inference(_spec({**BNB4, "bnb_4bit_quant_type": "nf4"}), InferSetup(context=64))
    assert not any("fused MoE" in n for n in dense.notes)


def test_qlora_on_a_moe_casts_the_unquantized_fused_experts_to_fp32() -> None:
    # bitsandbytes leaves the fused experts alone (above); peft prepare_model_for_kbit_training then casts every
    # fp16/bf16 parameter to fp32 (peft utils/other.py)
    spec = spec_from_config(MIXTRAL, name="tiny-moe", source="test")
    est = estimate_training(spec, TrainSetup.from_flat(seq=64, peft="qlora"))
    assert est.bytes_of("weights/experts") == (L * 4 * 3 * FFN * H + L * 4 * H) * 4  # experts and router in fp32
    assert any("k-bit preparation casts them to fp32" in n for n in est.notes)
