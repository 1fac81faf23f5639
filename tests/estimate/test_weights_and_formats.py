"""Weight bytes per format: hand arithmetic from block layouts, and llama.cpp's published file sizes."""

from __future__ import annotations

import pytest

from vramwise.catalog import models
from vramwise.errors import ConfigError, InvalidWorkloadError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.textbook import textbook_inference
from vramwise.estimate.weights import weight_terms
from vramwise.formats import default_format, get_format
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import InferSetup

GIB = 2**30


def _weights(model: str, fmt: str, tp: int = 1) -> int:
    return sum(t.bytes for t in weight_terms(resolve_model(model), get_format(fmt), hp_bytes=2, tp=tp))


def test_llama2_7b_fp16_weights() -> None:
    assert _weights("llama-2-7b", "fp16") == 6_738_415_616 * 2


def test_bare_14b_fp32_is_52_15_gib_and_56_gb() -> None:
    for estimate in (
        estimate_inference(resolve_model("14b"), InferSetup(weight_format="fp32")),
        textbook_inference(resolve_model("14e9"), InferSetup(weight_format="fp32")),
    ):
        w = estimate.term("weights/all").bytes
        assert w == 14 * 10**9 * 4
        assert round(w / GIB, 2) == 52.15
        assert round(w / 10**9, 1) == 56.0


@pytest.mark.parametrize(("fmt", "gib"), [("fp16", 26.08), ("int8", 13.04), ("int4", 6.52)])
def test_seed_14b_table(fmt: str, gib: float) -> None:
    # DESIGN §6 / seed 000: 14B in fp16 26.08 GiB, int8 13.04, int4 6.52
    w = textbook_inference(resolve_model("14b"), InferSetup(weight_format=fmt)).term("weights/all").bytes
    assert round(w / GIB, 2) == gib


def test_nf4_double_quant_bits_per_weight_by_hand() -> None:
    spec = resolve_model("llama-2-7b")
    linear = sum(g.count for g in parameter_groups(spec) if g.kind == "linear" and g.category in ("attention", "mlp"))
    kept = sum(g.count for g in parameter_groups(spec)) - linear  # embeddings, head, norms in bf16
    layers = [g for g in parameter_groups(spec) if g.kind == "linear" and g.category in ("attention", "mlp")]
    tensors = sum(g.tensors for g in layers)
    bits = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes + 8-bit absmax per 64 + fp32 per 256 blocks
    # per tensor: the 16-value fp32 4-bit code; with double quantization the 256-value fp32 map and the offset
    dq_state, state = (16 + 256 + 1) * 4, 16 * 4
    assert _weights("llama-2-7b", "nf4-dq") == pytest.approx(linear * bits / 8 + tensors * dq_state + kept * 2, abs=16)
    assert _weights("llama-2-7b", "nf4") == pytest.approx(linear * 4.5 / 8 + tensors * state + kept * 2, abs=16)


def test_gptq_group_overheads_by_hand() -> None:
    spec = resolve_model("llama-2-7b")
    linear = [g for g in parameter_groups(spec) if g.kind == "linear" and g.category in ("attention", "mlp")]
    kept = sum(g.count for g in parameter_groups(spec)) - sum(g.count for g in linear)
    # qweight 4 bit + per 128 weights an fp16 scale and a 4-bit zero, + g_idx: one int32 per input row
    expected = sum(g.count * (4 + 20 / 128) / 8 + g.tensors * g.in_features * 4 for g in linear) + kept * 2
    assert _weights("llama-2-7b", "gptq-4bit-g128") == pytest.approx(expected, abs=16)
    awq = sum(g.count * (4 + 20 / 128) / 8 for g in linear) + kept * 2
    assert _weights("llama-2-7b", "awq-4bit-g128") == pytest.approx(awq, abs=16)


# llama.cpp tools/quantize/quantize.cpp QUANT_OPTIONS: file sizes for Llama-3-8B, in GiB ("G"), 2 decimals.
@pytest.mark.parametrize(
    ("fmt", "published_gib"),
    [("q4_0", 4.34), ("q4_k_m", 4.58), ("q5_k_m", 5.33), ("q6_k", 6.14), ("q8_0", 7.96)],
)
def test_gguf_sizes_match_llama_cpp_table(fmt: str, published_gib: float) -> None:
    assert _weights("llama-3-8b", fmt) / GIB == pytest.approx(published_gib, abs=0.02)


def test_mxfp4_quantizes_only_gpt_oss_experts() -> None:
    spec = resolve_model("gpt-oss-20b")
    experts = sum(g.count for g in parameter_groups(spec) if g.per_expert and g.kind == "linear")
    # transformers Mxfp4GptOssExperts keeps the experts' biases in fp32
    biases = sum(g.count for g in parameter_groups(spec) if g.per_expert and g.kind == "bias")
    rest = sum(g.count for g in parameter_groups(spec)) - experts - biases
    assert _weights("gpt-oss-20b", "mxfp4") == pytest.approx(experts * 4.25 / 8 + biases * 4 + rest * 2, abs=16)
    # the default format of a pre-quantized checkpoint is its own
    assert estimate_inference(spec, InferSetup()).bytes_of("weights") == _weights("gpt-oss-20b", "mxfp4")


def test_tp_shards_linear_weights_and_replicates_norms() -> None:
    spec = resolve_model("llama-2-7b")
    groups = {g.name: g.count for g in parameter_groups(spec)}
    norms = groups["norms.layers"] + groups["norms.final"]
    vocab_rows = -(-32000 // 64) * 64 // 2  # vocabulary padded to a multiple of 64, split in two
    expected = (6_738_415_616 - norms - 2 * 32000 * 4096) * 2 // 2 + norms * 2 + 2 * vocab_rows * 4096 * 2
    assert _weights("llama-2-7b", "fp16", tp=2) == expected


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(InvalidWorkloadError, match="allowed"):
        get_format("q3_xyz")


# -- W5: a pre-quantized checkpoint's quantization_config sets the default format ----------------------------
# Oracle: the format arithmetic above (already checked by hand against the AutoGPTQ/AutoAWQ/bitsandbytes
# layouts); the checkpoint's quantization_config must select the same format that -f selects by name.

_GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
_AWQ = {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm", "zero_point": True}
_BNB4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


def _llama2_with(quantization: object) -> ModelSpec:
    config = {**models()["llama-2-7b"].config, "quantization_config": quantization}
    return spec_from_config(config, name="llama-2-7b-q", source="test")


def _weight_bytes(spec: ModelSpec, fmt: str | None) -> int:
    estimate = estimate_inference(spec, InferSetup(weight_format=fmt))
    return sum(t.bytes for t in estimate.persistent if t.name.startswith("weights/"))


def _default_weights(spec: ModelSpec) -> int:
    return _weight_bytes(spec, None)


def _named_weights(fmt: str) -> int:
    return _weight_bytes(resolve_model("llama-2-7b"), fmt)


@pytest.mark.parametrize(
    ("quantization", "fmt"),
    [
        (_GPTQ, "gptq-4bit-g128"),
        ({**_GPTQ, "bits": 8, "group_size": 32}, "gptq-8bit-g32"),
        (_AWQ, "awq-4bit-g64"),
        ({"quant_method": "awq", "w_bit": 4, "q_group_size": 128}, "awq-4bit-g128"),  # AutoAWQ's own spelling
        (_BNB4, "nf4"),
        ({**_BNB4, "bnb_4bit_use_double_quant": True}, "nf4-dq"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "int8"),
        ({**_GPTQ, "group_size": -1, "desc_act": True}, "gptq-4bit-g-1"),
        ({**_BNB4, "bnb_4bit_quant_type": "fp4"}, "fp4"),
        ({"quant_method": "fp8", "weight_block_size": [64, 64]}, "fp8-block64x64"),
        ({"quant_method": "hqq"}, "hqq-4bit-g64"),  # HqqConfig's defaults: nbits 4, group_size 64
    ],
)
def test_quantization_config_selects_the_same_weights_as_the_format_option(quantization: dict, fmt: str) -> None:
    spec = _llama2_with(quantization)
    assert default_format(spec) == fmt
    assert _default_weights(spec) == _named_weights(fmt)
    assert _default_weights(spec) < _named_weights("fp16")  # no longer the 16-bit bytes (W5)


def test_gptq_checkpoint_is_about_a_quarter_of_fp16() -> None:
    # 4 bit + (16 + 4) / 128 bit per linear weight vs 16: under 30% for the linears; embeddings stay fp16.
    assert _default_weights(_llama2_with(_GPTQ)) / _named_weights("fp16") < 0.3


@pytest.mark.parametrize(
    ("quantization", "field"),
    [
        ({"quant_method": "compressed-tensors", "format": "pack-quantized"}, "quantization_config.config_groups"),
        ({"quant_method": "aqlm"}, "quantization_config.quant_method"),
        ({"quant_method": "no-such-method"}, "quantization_config.quant_method"),
        ({**_GPTQ, "lm_head": True}, "quantization_config.lm_head"),
        ({**_AWQ, "group_size": 128, "version": "gemv"}, "quantization_config.version"),
        ({"quant_method": "bitsandbytes"}, "quantization_config.load_in_4bit"),
        ({"quant_method": "fp8", "expert_dtype": "fp4"}, "quantization_config.expert_dtype"),
    ],
)
def test_unread_quantization_is_refused_until_a_format_is_given(quantization: dict, field: str) -> None:
    spec = _llama2_with(quantization)
    with pytest.raises(ConfigError) as info:
        _default_weights(spec)
    message = str(info.value)
    assert "\n" not in message and field in message and "--format" in message and info.value.field == field
    assert _weight_bytes(spec, "int8") == _named_weights("int8")  # --format overrides the unread quantization


@pytest.mark.parametrize(
    ("quantization", "field"),
    [
        ("gptq", "quantization_config"),
        ({"quant_method": 4}, "quantization_config.quant_method"),
        ({**_GPTQ, "bits": 5}, "quantization_config.bits"),
        ({**_GPTQ, "bits": True}, "quantization_config.bits"),
        ({**_GPTQ, "group_size": 0}, "quantization_config.group_size"),
        ({**_AWQ, "group_size": "128"}, "quantization_config.group_size"),
        ({**_BNB4, "bnb_4bit_quant_type": "int3"}, "quantization_config.bnb_4bit_quant_type"),
        ({"quant_method": "fp8", "weight_block_size": [0, 128]}, "quantization_config.weight_block_size"),
    ],
)
def test_malformed_quantization_config_is_refused(quantization: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _llama2_with(quantization)
    assert "\n" not in str(info.value) and field in str(info.value) and info.value.field == field


def test_published_fp8_and_mxfp4_checkpoints_keep_their_formats() -> None:
    assert default_format(resolve_model("deepseek-v3")) == "fp8-block"
    assert default_format(resolve_model("gpt-oss-20b")) == "mxfp4"
    assert default_format(_llama2_with({"quant_method": "fp8", "weight_block_size": [128, 128]})) == "fp8-block"
