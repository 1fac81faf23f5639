"""Weight storage formats and their real byte cost, including scales, zeros and block headers.

A format quantizes some tensors (usually the linear weights inside the layers) and leaves the rest in a
high-precision dtype (embeddings, lm_head, norms, biases, MoE routers), as the real quantizers do.
Each format names its source in ``StorageFormat.source``, which every weight term's ``--explain`` text cites.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from vramwise.errors import ConfigError, InvalidWorkloadError, shown
from vramwise.formats import quantized
from vramwise.formats.quantized import Layout
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import ParamGroup

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "fp8-e4m3": 1, "fp8-e5m2": 1, "int8": 1}

# bits per weight of llama.cpp blocks: (bytes per block * 8) / elements per block (ggml-common.h).
GGUF_TYPE_BITS: dict[str, float] = {
    "Q4_0": 18 * 8 / 32,
    "Q4_1": 20 * 8 / 32,
    "Q5_0": 22 * 8 / 32,
    "Q8_0": 34 * 8 / 32,
    "Q2_K": 84 * 8 / 256,
    "Q3_K": 110 * 8 / 256,
    "Q4_K": 144 * 8 / 256,
    "Q5_K": 176 * 8 / 256,
    "Q6_K": 210 * 8 / 256,
    "F16": 16,
    "F32": 32,
}


@dataclass(frozen=True, kw_only=True)
class TensorBytes:
    """Bytes of one parameter group in a format, with the formula that produced them."""

    group: str
    bytes: int
    formula: str


@dataclass(frozen=True, kw_only=True)
class StorageFormat:
    """How a format stores each kind of tensor."""

    name: str
    summary: str
    source: str
    tensor_bytes: Callable[[ParamGroup, ModelSpec, int], TensorBytes]  # (group, spec, high-precision bytes)
    # Forwards in which transformers' layer dequantizes one whole weight to the compute dtype before a 16-bit
    # matmul: "" never (fused kernels), "prefill" (more than one token), "always".
    dequant: str = ""
    note: str = ""  # what the runtime does with these bytes that the weights term alone does not say
    moe_note: str = ""  # the same, for models with routed experts only


def _kept(group: ParamGroup, hp_bytes: int) -> TensorBytes:
    width = group.width(hp_bytes)
    why = " (kept in fp32)" if width != hp_bytes else ""
    return TensorBytes(group=group.name, bytes=group.count * width, formula=f"{group.count:,} x {width} B{why}")


def _bits(group: ParamGroup, bits: float, extra_bytes: int = 0, why: str = "") -> TensorBytes:
    n = group.count * bits / 8 + extra_bytes
    extra = f" + {extra_bytes:,} B" if extra_bytes else ""
    return TensorBytes(group=group.name, bytes=round(n), formula=f"{group.count:,} x {bits:g} bit / 8{extra}{why}")


def _out_features(group: ParamGroup) -> int:
    return group.count // (group.tensors * group.in_features)


def _uniform(dtype_bytes: int) -> Callable[[ParamGroup, ModelSpec, int], TensorBytes]:
    # A plain dtype stores every tensor at that width (norms too: model.to(dtype) casts everything).
    def rule(group: ParamGroup, spec: ModelSpec, hp_bytes: int) -> TensorBytes:
        return _kept(group, dtype_bytes)

    return rule


def _tower_kept(group: ParamGroup, spec: ModelSpec) -> bool:
    """A vision-language model's tower and projector, when the checkpoint's quantization leaves them in 16 bit
    (``VisionSpec.quantized``)."""
    return spec.vision is not None and not spec.vision.quantized and group.category in ("vision", "projector")


def _linear_only(bits_of: Callable[[ParamGroup], tuple[float, int, str]]):
    """Quantize linear weights inside the layers; keep embeddings, head, norms, biases, routers."""

    def rule(group: ParamGroup, spec: ModelSpec, hp_bytes: int) -> TensorBytes:
        if group.kind != "linear" or group.category in ("embeddings", "head", "other") or _tower_kept(group, spec):
            return _kept(group, hp_bytes)
        bits, extra, why = bits_of(group)
        return _bits(group, bits, extra, why)

    return rule


def _fp8_block(group: ParamGroup) -> tuple[float, int, str]:
    # DeepSeek-V3 style: one fp32 scale per 128x128 block.
    out, n_in = _out_features(group), group.in_features
    scales = group.tensors * -(-out // 128) * -(-n_in // 128) * 4
    return 8, scales, " (+ fp32 scale per 128x128 block)"


def _fp8_tensor(group: ParamGroup) -> tuple[float, int, str]:
    return 8, group.tensors * 4, " (+ one fp32 scale per tensor)"


def _int8_rowwise(group: ParamGroup) -> tuple[float, int, str]:
    # bitsandbytes LLM.int8(): int8 weight plus one fp32 scale (SCB) per output row.
    return 8, group.tensors * _out_features(group) * 4, " (+ fp32 scale per output row)"


def _nn_linear_only(rule: Callable[[ParamGroup, ModelSpec, int], TensorBytes]):
    """bitsandbytes in transformers replaces ``nn.Linear`` (and GPT-2's Conv1D) modules only
    (integrations/bitsandbytes.py replace_with_bnb_linear; Bnb4BitHfQuantizer.param_needs_quantization asks for a
    Linear4bit): the routed experts of transformers 5's MoE layers are fused 3-D parameters (MixtralExperts,
    Qwen3MoeExperts, DeepseekV3NaiveMoe...), so they stay in the load dtype. vLLM's bitsandbytes MoE method
    quantizes them; the format's note says so."""

    def kept_experts(group: ParamGroup, spec: ModelSpec, hp_bytes: int) -> TensorBytes:
        if group.per_expert and group.kind == "linear":
            kept = _kept(group, hp_bytes)
            formula = kept.formula + " (fused experts: no nn.Linear)"
            return TensorBytes(group=group.name, bytes=kept.bytes, formula=formula)
        return rule(group, spec, hp_bytes)

    return kept_experts


_BNB_NOTE = (
    "bitsandbytes in transformers quantizes nn.Linear modules only: fused MoE experts stay 16-bit "
    "(vLLM's bitsandbytes MoE method quantizes them)"
)


def _bnb4(double_quant: bool) -> Callable[[ParamGroup, ModelSpec, int], TensorBytes]:
    """bitsandbytes 4-bit, NF4 and FP4 alike (functional.quantize_4bit, blocksize 64 in Params4bit), per tensor:
    the codes two per uint8, an fp32 absmax per 64 elements, and the QuantState's code (the 16-value map, fp32).
    Double quantization (compress_statistics) stores the absmax as uint8 blocks of 256 (quantize_blockwise): an
    fp32 absmax per 256 of them, their 256-value fp32 code and the fp32 offset subtracted before."""

    def one(numel: int) -> int:
        blocks = -(-numel // 64)
        stats = blocks + -(-blocks // 256) * 4 + 256 * 4 + 4 if double_quant else blocks * 4
        return -(-numel // 2) + stats + 16 * 4

    def rule(group: ParamGroup, spec: ModelSpec, hp_bytes: int) -> TensorBytes:
        if group.kind != "linear" or group.category in ("embeddings", "head", "other") or _tower_kept(group, spec):
            return _kept(group, hp_bytes)
        per = group.count // group.tensors
        why = "absmax uint8 per 64, fp32 per 256 blocks, codes" if double_quant else "fp32 absmax per 64, code"
        formula = f"{group.tensors:,} x {one(per):,} B ({per:,} x 4 bit + {why})"
        return TensorBytes(group=group.name, bytes=group.tensors * one(per), formula=formula)

    return rule


def _packed(layout: Layout) -> Callable[[ParamGroup, ModelSpec, int], TensorBytes]:
    """A quantized layout (formats/quantized.py) on the linear weights inside the layers; the rest kept."""
    packing = layout.packing

    def rule(group: ParamGroup, spec: ModelSpec, hp_bytes: int) -> TensorBytes:
        if group.kind != "linear" or group.category in ("embeddings", "head", "other") or _tower_kept(group, spec):
            return _kept(group, hp_bytes)
        out, n_in = _out_features(group), group.in_features
        one = packing.tensor_bytes(out, n_in, hp_bytes)
        formula = f"{group.tensors:,} x {one:,} B ({out:,} x {n_in:,} as {layout.name})"
        return TensorBytes(group=group.name, bytes=group.tensors * one, formula=formula)

    return rule


def _layout_format(layout: Layout) -> StorageFormat:
    return StorageFormat(
        name=layout.name,
        summary=layout.summary,
        source=layout.source,
        tensor_bytes=_packed(layout),
        dequant=layout.dequant,
        note=layout.note,
    )


def _grouped(bits: int, group_size: int, g_idx: bool) -> Callable[[ParamGroup], tuple[float, int, str]]:
    # GPTQ/AWQ: packed weights, an fp16 scale and a packed `bits`-wide zero per group per output column;
    # GPTQ also stores g_idx, one int32 per input feature.
    def of(group: ParamGroup) -> tuple[float, int, str]:
        extra = group.tensors * group.in_features * 4 if g_idx else 0
        why = f" (fp16 scale + {bits}-bit zero per {group_size} weights{', int32 g_idx per input' if g_idx else ''})"
        return bits + (16 + bits) / group_size, extra, why

    return of


def _use_more_bits(i: int, n: int) -> bool:
    # llama.cpp (src/llama-quant.cpp): first and last eighth of layers, and every third one in between.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _gguf(base: str, bumped: str | None) -> Callable[[ParamGroup, ModelSpec, int], TensorBytes]:
    """llama.cpp file types. ``bumped``: type given to attn_v and ffn_down on use_more_bits layers (_M mixes)."""
    base_bits = GGUF_TYPE_BITS[base]

    def rule(group: ParamGroup, spec: ModelSpec, hp_bytes: int) -> TensorBytes:
        if group.kind in ("norm", "bias", "router", "other") or group.name in (
            "embeddings.positions",
            "embeddings.token_types",
        ):
            return TensorBytes(
                group=group.name, bytes=group.count * 4, formula=f"{group.count:,} x 4 B (F32, not quantized)"
            )
        if group.name == "head.lm_head" or (group.name == "embeddings.tokens" and spec.tied_embeddings):
            kind = "Q8_0" if base == "Q8_0" else "Q6_K"  # output.weight gets 6 bits in every k-quant mix
            return _bits(group, GGUF_TYPE_BITS[kind], 0, f" ({kind} output tensor)")
        if bumped and group.name in ("attention.v", "mlp.down", "experts.down", "experts_shared.down"):
            n = group.tensors if group.name == "attention.v" else spec.num_layers
            more = sum(_use_more_bits(i, n) for i in range(n)) / n
            bits = more * GGUF_TYPE_BITS[bumped] + (1 - more) * base_bits
            return _bits(group, bits, 0, f" ({more:.0%} of layers in {bumped}, rest {base})")
        return _bits(group, base_bits, 0, f" ({base})")

    return rule


def _mxfp4(group: ParamGroup, spec: ModelSpec, hp_bytes: int) -> TensorBytes:
    # gpt-oss: only the routed expert matrices are MXFP4 (32 E2M1 values + one E8M0 scale byte per block).
    if group.per_expert and group.kind == "linear":
        return _bits(group, 4.25, 0, " (MXFP4: 4-bit E2M1 + 8-bit scale per 32)")
    if group.per_expert and group.kind == "bias":
        # transformers integrations/mxfp4.py Mxfp4GptOssExperts.__init__: gate_up_proj_bias, down_proj_bias fp32
        return TensorBytes(group=group.name, bytes=group.count * 4, formula=f"{group.count:,} x 4 B (fp32 biases)")
    return _kept(group, hp_bytes)


_BNB = "bitsandbytes (functional.py quantize_4bit / int8); transformers BitsAndBytesConfig"
# bitsandbytes autograd/_functions.py matmul_4bit: one token without grad takes gemv_4bit (fused); more tokens
# take MatMul4Bit.forward, F.linear(A, F.dequantize_4bit(B, quant_state).to(A.dtype).t()): a whole 16-bit weight.
_BNB_DEQUANT = "prefill"


def _bnb4_format(name: str, summary: str, double_quant: bool) -> StorageFormat:
    """bitsandbytes 4-bit: NF4 and FP4 store the same bytes (a 4-bit code per weight, an absmax per block of 64),
    so the four formats differ in their name and the double quantization of the absmax only."""
    return StorageFormat(
        name=name,
        summary=summary,
        source=_BNB,
        tensor_bytes=_nn_linear_only(_bnb4(double_quant)),
        dequant=_BNB_DEQUANT,
        moe_note=_BNB_NOTE,
    )


FORMATS: dict[str, StorageFormat] = {
    f.name: f
    for f in (
        StorageFormat(name="fp32", summary="float32, every tensor", source="IEEE 754", tensor_bytes=_uniform(4)),
        StorageFormat(name="fp16", summary="float16, every tensor", source="IEEE 754", tensor_bytes=_uniform(2)),
        StorageFormat(name="bf16", summary="bfloat16, every tensor", source="bfloat16", tensor_bytes=_uniform(2)),
        StorageFormat(
            name="fp8-e4m3",
            summary="fp8 E4M3 linear weights, per-tensor fp32 scale (vLLM fp8)",
            source="vLLM fp8 / NVIDIA Transformer Engine",
            tensor_bytes=_linear_only(_fp8_tensor),
        ),
        StorageFormat(
            name="fp8-e5m2",
            summary="fp8 E5M2 linear weights, per-tensor fp32 scale",
            source="vLLM fp8 / NVIDIA Transformer Engine",
            tensor_bytes=_linear_only(_fp8_tensor),
        ),
        StorageFormat(
            name="fp8-block",
            summary="fp8 E4M3 linear weights, fp32 scale per 128x128 block (DeepSeek-V3)",
            source="DeepSeek-V3 config quantization_config weight_block_size [128, 128]",
            tensor_bytes=_linear_only(_fp8_block),
        ),
        StorageFormat(
            name="int8",
            summary="LLM.int8(): int8 linear weights + fp32 scale per row",
            source=_BNB,
            tensor_bytes=_nn_linear_only(_linear_only(_int8_rowwise)),
            moe_note=_BNB_NOTE,
        ),
        StorageFormat(
            name="int4",
            summary="plain 4-bit linear weights, no scales (the seeds' 0.5 byte)",
            source="seed 000 dtype table",
            tensor_bytes=_linear_only(lambda g: (4, 0, "")),
        ),
        *(
            _bnb4_format(name, summary, double_quant)
            for name, summary, double_quant in (
                ("nf4", "bitsandbytes NF4, blocks of 64 with fp32 absmax", False),
                ("nf4-dq", "bitsandbytes NF4 with double quantization (QLoRA)", True),
                ("fp4", "bitsandbytes FP4, blocks of 64 with fp32 absmax", False),
                ("fp4-dq", "bitsandbytes FP4 with double quantization", True),
            )
        ),
        *(_layout_format(layout) for layout in quantized.FIXED),
        StorageFormat(
            name="mxfp4",
            summary="MXFP4 routed experts, the rest in bf16 (gpt-oss)",
            source="OCP Microscaling spec v1.0; gpt-oss quantization_config",
            tensor_bytes=_mxfp4,
            # quantizers/quantizer_mxfp4.py validate_environment: without the triton kernels (and a GPU of compute
            # capability 7.5+), transformers loads the experts dequantized to bf16
            note="transformers keeps MXFP4 only with the triton kernels; without them it dequantizes to bf16 "
            "(Mxfp4HfQuantizer.validate_environment)",
        ),
        *(
            StorageFormat(
                name=name.lower(),
                summary=summary,
                source="llama.cpp ggml-common.h block layouts, src/llama-quant.cpp",
                tensor_bytes=_gguf(base, bumped),
            )
            for name, base, bumped, summary in (
                ("Q4_0", "Q4_0", None, "GGUF Q4_0: 32-weight blocks, fp16 scale (4.5 bpw)"),
                ("Q8_0", "Q8_0", None, "GGUF Q8_0: 32-weight blocks, fp16 scale (8.5 bpw)"),
                ("Q4_K_M", "Q4_K", "Q6_K", "GGUF Q4_K_M: Q4_K, half of attn_v/ffn_down in Q6_K, output Q6_K"),
                ("Q5_K_M", "Q5_K", "Q6_K", "GGUF Q5_K_M: Q5_K, half of attn_v/ffn_down in Q6_K, output Q6_K"),
                ("Q6_K", "Q6_K", None, "GGUF Q6_K: 256-weight super-blocks (6.5625 bpw)"),
            )
        ),
    )
}

@functools.lru_cache(maxsize=256)  # one object per name, so the weight caches keyed on it hit for GPTQ/AWQ too
def get_format(name: str) -> StorageFormat:
    """A format by name; the parametric ones (formats/quantized.py TEMPLATES) take bits, groups and blocks:
    ``gptq-4bit-g128``, ``awq-4bit-g64``, ``fp8-block1x128``, ``ct-pack4-g128``, ``hqq-4bit-g64``."""
    key = name.lower()
    if key in FORMATS:
        return FORMATS[key]
    try:
        layout = quantized.parse(key)
    except ValueError as e:
        raise InvalidWorkloadError(f"format {shown(name)}: {e}", field="format") from None
    if layout is not None:
        return _layout_format(layout)
    allowed = ", ".join([*FORMATS, *quantized.TEMPLATES])
    raise InvalidWorkloadError(
        f"unknown weight format {shown(name)}; allowed: {allowed}", field="format", allowed=allowed
    )


def kept_note(spec: ModelSpec) -> str | None:
    """The report's note when the checkpoint's quantization_config keeps projections inside the layers in high
    precision (``ModelSpec.quant_kept``): the layouts here count them quantized."""
    if not spec.quant_kept:
        return None
    first = shown(spec.quant_kept[0], 80)
    return (
        f"quantization_config keeps {len(spec.quant_kept)} in-layer module pattern(s) unquantized (e.g. {first}); "
        "the weights term counts them quantized: the checkpoint's safetensors headers give the exact bytes"
    )


def default_format(spec: ModelSpec) -> str:
    """The checkpoint's own format: the quantized one its quantization_config declares
    (spec/adapters/quant_config.py), else its 16-bit dtype (fp32 served as bf16).

    A quantization no format here expresses is refused rather than estimated at 16 bit (3.5x a 4-bit
    checkpoint's bytes); ``--format`` (``weight_format``) overrides it and never reaches this function."""
    if spec.unread_quantization:
        key, value = spec.unread_quantization
        value = value if " is not " in value else f"{value} is not read"  # readers may say why themselves
        raise ConfigError(
            f"{spec.source}: {key} {value}; pass --format (e.g. int8, nf4, gptq-4bit-g128; `vramwise formats`) "
            "to say how the checkpoint stores its weights",
            field=key,
            allowed="--format with one of the weight formats (`vramwise formats`)",
        )
    if spec.stored_format == "fp8":  # the name older specs carry for DeepSeek-V3's 128x128 blocks
        return "fp8-block"
    if spec.stored_format:
        return spec.stored_format
    return spec.stored_dtype if spec.stored_dtype in ("fp16", "bf16") else "bf16"
