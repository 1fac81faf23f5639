"""Weight bytes per format: hand arithmetic from block layouts, and llama.cpp's published file sizes."""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.textbook import textbook_inference
from vramwise.estimate.weights import weight_terms
from vramwise.formats import get_format
from vramwise.spec.load import resolve_model
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
    bits = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes + 8-bit absmax per 64 + fp32 per 256 blocks
    assert _weights("llama-2-7b", "nf4-dq") == pytest.approx(linear * bits / 8 + kept * 2, abs=16)
    assert _weights("llama-2-7b", "nf4") == pytest.approx(linear * 4.5 / 8 + kept * 2, abs=16)


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
    rest = sum(g.count for g in parameter_groups(spec)) - experts
    assert _weights("gpt-oss-20b", "mxfp4") == pytest.approx(experts * 4.25 / 8 + rest * 2, abs=16)
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
