"""Packed quantized layouts, tensor by tensor, exactly as each method's packing code stores a linear weight.

A linear weight of ``out x in`` elements becomes: the packed integer (or fp8/fp4) codes, scales (one per block of
``rows x cols`` elements; a group of g is the block 1 x g, a channel 1 x in, a tensor out x in), optionally zero
points packed like the codes, optionally ``g_idx`` (one int32 per input feature) and a few bytes per tensor. Every
layout below names the function that allocates or writes those tensors; ``parse`` reads the format names that
``spec/adapters/storage.py`` writes for a checkpoint (and that ``--format`` accepts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# How codes and packed zeros fill their words along a dimension:
#  stream: bit-exact, ceil(n * bits / word_bits) words (AutoGPTQ/GPTQModel pack: qweight rows = in // 32 * bits);
#  whole:  ceil(n / (word_bits // bits)) words, no value straddles two words (compressed-tensors pack_to_int32;
#          AutoAWQ pack_num = 32 // w_bit).
Pack = Literal["stream", "whole"]
Zero = Literal["none", "packed", "hp", "int8", "int64"]


@dataclass(frozen=True, kw_only=True)
class Packing:
    """The stored tensors of one quantized linear weight (``out`` rows, ``in`` columns)."""

    bits: int  # bits per code
    word_bits: int = 8  # the container the codes are packed in (uint8: 8, int32: 32)
    pack: Pack = "stream"
    along: Literal["in", "out"] = "in"  # the dimension the codes are packed along
    block: tuple[int, int] | None = None  # (rows, cols) elements sharing one scale; None: out x in (per tensor)
    scale_bytes: int = 0  # 0: the checkpoint's high-precision dtype (compressed-tensors, HQQ, bitnet)
    # zero points, one per scale: none, packed along the output rows like the codes (GPTQ/AWQ/compressed-tensors),
    # one value in the high-precision dtype (HQQ, torchao int4), one int8 (compressed-tensors naive formats) or
    # one int64 (torchao int8 weight-only)
    zero: Zero = "none"
    g_idx: bool = False  # one int32 per input feature
    per_tensor: int = 0  # constant bytes per tensor (weight_shape, a global scale)

    def _codes(self, n: int) -> int:
        """Words' bytes for ``n`` codes packed in one run."""
        per_word = self.word_bits // self.bits
        words = -(-n // per_word) if self.pack == "whole" else -(-n * self.bits // self.word_bits)
        return words * self.word_bits // 8

    def tensor_bytes(self, out: int, n_in: int, hp_bytes: int) -> int:
        """Bytes of one ``out x n_in`` weight in this layout."""
        codes = self._codes(n_in) * out if self.along == "in" else self._codes(out) * n_in
        rows, cols = self.block or (out, n_in)
        scale_rows, scale_cols = -(-out // rows), -(-n_in // cols)
        scales = scale_rows * scale_cols * (self.scale_bytes or hp_bytes)
        zeros = 0
        if self.zero == "packed":
            zeros = scale_cols * self._codes(out)
        elif self.zero != "none":
            zeros = scale_rows * scale_cols * {"hp": hp_bytes, "int8": 1, "int64": 8}[self.zero]
        g_idx = n_in * 4 if self.g_idx else 0
        return codes + scales + zeros + g_idx + self.per_tensor


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A named quantized format: its packing, what it says in one line, and the code it follows."""

    name: str
    packing: Packing
    summary: str
    source: str
    dequant: str = ""  # StorageFormat.dequant: forwards that dequantize a whole weight
    note: str = ""


def _block(token: str) -> tuple[int, int] | None:
    """``tensor`` -> None, ``channel`` -> (1, huge), ``g128`` -> (1, 128), ``b128x128`` -> (128, 128)."""
    if token == "tensor":
        return None
    if token == "channel" or token == "g-1":
        return (1, 2**62)  # one scale per output row, whatever the width
    sizes = (1, int(token[1:])) if token.startswith("g") else tuple(int(x) for x in token[1:].split("x"))
    if min(sizes) <= 0:
        raise ValueError("group and block sizes must be positive")
    return (sizes[0], sizes[1])


def _strategy_text(token: str) -> str:
    if token in ("tensor", "channel"):
        return f"per {token}"
    if token == "g-1":
        return "per channel (group_size -1)"
    if token.startswith("g"):
        return f"group size {token[1:]}"
    return f"{token[1:]} blocks"


_GPTQ_SRC = (
    "GPTQModel/AutoGPTQ QuantLinear.pack: qweight int32 (in*bits/32, out), qzeros int32 (groups, out*bits/32), "
    "scales fp16 (groups, out), g_idx int32 (in,) always registered"
)
_AWQ_SRC = (
    "AutoAWQ WQLinear_GEMM: qweight int32 (in, out/(32/w_bit)), qzeros int32 (groups, out/(32/w_bit)), "
    "scales fp16 (groups, out); zero_point false stores no qzeros"
)
_FP8_SRC = (
    "transformers integrations/finegrained_fp8.py FP8Linear.__init__: weight fp8 (out, in), weight_scale_inv "
    "(ceil(out/b0), ceil(in/b1)) fp32, or 1-byte e8m0 with scale_fmt ue8m0 (MXFP8: blocks [1, 32])"
)
_CT_SRC = (
    "compressed-tensors PackedQuantizationCompressor.compression_param_info: weight_packed int32 "
    "(out, ceil(in/(32//bits))), weight_shape int32 (2,), asymmetric group/channel weight_zero_point int32 "
    "(ceil(out/(32//bits)), groups); BaseQuantizationCompressor.compress: naive formats keep weight and "
    "weight_scale (model dtype), zero points only when asymmetric, g_idx only with activation ordering"
)
# transformers quantizers/quantizer_compressed_tensors.py (class docstring)
_CT_NOTE = (
    "these are the compressed bytes (vLLM's); transformers' compressed-tensors path decompresses the weights to "
    "16 bit on the first forward unless use_optimized_inference keeps fp8"
)
_HQQ_SRC = (
    "hqq core/quantize.py Quantizer.quantize + bitpack: W_q uint8 packed (8/4/2/1 bits), scale and zero one "
    "each per group in the compute dtype (fp16/bf16), HqqConfig axis 1"
)
_TORCHAO_SRC = (
    "torchao Int4WeightOnlyConfig (group_size 128 default): int4 codes two per byte, scale_and_zero bf16 "
    "(in/group, out, 2) (TensorCoreTiledLayout)"
)

# Pattern text, compiled by re's own cache on the first parametric name: a catalog estimate of a 16-bit checkpoint
# never compiles them (the fresh-process time of `vramwise infer`, bench/speed.py).
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(gptq|awq)-(\d+)bit(?:-(g\d+|g-1))?(-nozp)?", "grouped"),
    (r"fp8-block(\d+)x(\d+)(-e8m0)?", "fp8"),
    (r"ct-(pack|int|fp)(\d)-(tensor|channel|g\d+|b\d+x\d+)(-asym)?(-gidx)?", "ct"),
    (r"hqq-([1248])bit-g(\d+)", "hqq"),
    (r"torchao-int4-g(\d+)", "torchao"),
)
TEMPLATES = (
    "gptq-<b>bit-g<g>",
    "gptq-<b>bit-g-1",
    "awq-<b>bit-g<g>[-nozp]",
    "fp8-block<r>x<c>[-e8m0]",
    "ct-<pack|int|fp><bits>-<tensor|channel|g<g>|b<r>x<c>>[-asym][-gidx]",
    "hqq-<b>bit-g<g>",
    "torchao-int4-g<g>",
)


def _grouped(m: re.Match[str]) -> Layout:
    kind, bits, token, nozp = m.group(1), int(m.group(2)), m.group(3) or "g128", bool(m.group(4))
    if bits not in (2, 3, 4, 8):
        raise ValueError("bits must be 2, 3, 4 or 8 (GPTQConfig)")
    if kind == "awq" and bits != 4:
        # AutoAWQ's WQLinear kernels and transformers' AwqConfig pack 4-bit only (pack_num = 32 // w_bit)
        raise ValueError("AWQ packs 4-bit weights only")
    if kind == "gptq" and nozp:
        raise ValueError("GPTQ always stores qzeros; -nozp is an AWQ option")
    if kind == "gptq":
        packing = Packing(bits=bits, word_bits=32, block=_block(token), scale_bytes=2, zero="packed", g_idx=True)
        src = _GPTQ_SRC
    else:
        zero: Zero = "none" if nozp else "packed"
        packing = Packing(bits=bits, word_bits=32, pack="whole", along="out", block=_block(token), scale_bytes=2,
                          zero=zero)
        src = _AWQ_SRC
    name = m.group(0)
    what = f"{kind.upper()} {bits}-bit, {_strategy_text(token)}" + (", no zero points" if nozp else "")
    return Layout(name=name, packing=packing, summary=what, source=src)


def _fp8(m: re.Match[str]) -> Layout:
    e8m0 = bool(m.group(3))
    rows, cols = _block(f"b{m.group(1)}x{m.group(2)}") or (0, 0)
    packing = Packing(bits=8, block=(rows, cols), scale_bytes=1 if e8m0 else 4)
    scale = "e8m0" if e8m0 else "fp32"
    return Layout(
        name=m.group(0), packing=packing, summary=f"fp8 E4M3 linear weights, {scale} scale per {rows}x{cols} block",
        source=_FP8_SRC,
    )


def _ct(m: re.Match[str]) -> Layout:
    fmt, bits, token = m.group(1), int(m.group(2)), m.group(3)
    asym, gidx = bool(m.group(4)), bool(m.group(5))
    if (fmt == "pack" and not 0 < bits <= 8) or (fmt in ("int", "fp") and bits != 8):
        raise ValueError("pack-quantized takes 1 to 8 bits; int-quantized and float-quantized store 8-bit codes")
    block = _block(token)
    grouped = token.startswith("g") or token == "channel"
    if fmt == "pack":
        packed: Zero = "packed" if asym and grouped else "none"
        packing = Packing(bits=bits, word_bits=32, pack="whole", block=block, zero=packed, g_idx=gidx, per_tensor=8)
    else:
        # naive (int-quantized / float-quantized): codes one per byte; an asymmetric zero point (int8, the
        # scale's shape) is kept by BaseQuantizationCompressor.compress only when not symmetric
        packing = Packing(bits=8, block=block, zero="hp" if asym else "none", g_idx=gidx)
    kind = {"pack": f"int{bits} packed in int32", "int": "int8", "fp": "fp8 E4M3"}[fmt]
    extra = (", asymmetric" if asym else "") + (", g_idx" if gidx else "")
    return Layout(
        name=m.group(0), packing=packing, summary=f"compressed-tensors {kind}, {_strategy_text(token)}{extra}",
        source=_CT_SRC, note=_CT_NOTE,
    )


def _hqq(m: re.Match[str]) -> Layout:
    bits, block = int(m.group(1)), _block(f"g{m.group(2)}")
    packing = Packing(bits=bits, block=block, zero="hp")
    group = m.group(2)
    # hqq core/quantize.py HQQLinear.forward_pytorch: matmul(x, self.dequantize().t()), every forward
    return Layout(
        name=m.group(0), packing=packing, summary=f"HQQ {bits}-bit, group size {group}", source=_HQQ_SRC,
        dequant="always",
    )


def _torchao(m: re.Match[str]) -> Layout:
    group = m.group(1)
    packing = Packing(bits=4, block=_block(f"g{group}"), scale_bytes=2, zero="hp")
    return Layout(
        name=m.group(0), packing=packing, summary=f"torchao int4 weight-only, group size {group}", source=_TORCHAO_SRC
    )


_BUILDERS = {"grouped": _grouped, "fp8": _fp8, "ct": _ct, "hqq": _hqq, "torchao": _torchao}


def parse(name: str) -> Layout | None:
    """The layout a parametric format name spells, or None when it spells none (ValueError: it does, wrongly)."""
    for pattern, kind in _PATTERNS:
        m = re.fullmatch(pattern, name)
        if m:
            return _BUILDERS[kind](m)
    return None


# Fixed layouts (no parameters), registered by name in formats.FORMATS.
FIXED: tuple[Layout, ...] = (
    Layout(
        name="fp8-channel",
        packing=Packing(bits=8, block=(1, 2**62), scale_bytes=4),
        summary="fp8 E4M3 linear weights, fp32 scale per output row (fbgemm_fp8)",
        source="transformers integrations/fbgemm_fp8.py FbgemmFp8Linear.__init__: weight fp8 (out, in), "
        "weight_scale fp32 (out, 1)",
    ),
    Layout(
        name="eetq-int8",
        packing=Packing(bits=8, block=(1, 2**62), scale_bytes=2),
        summary="EETQ int8 linear weights, fp16 scale per output column",
        source="transformers integrations/eetq.py EetqLinear.__init__: weight int8 (in, out), weight_scales fp16 (out)",
    ),
    Layout(
        name="bitnet",
        packing=Packing(bits=2, along="out"),  # block None: one scale per tensor, in the model dtype
        summary="BitNet ternary weights, 4 per uint8 along the output rows, one scale per linear",
        source="transformers integrations/bitnet.py BitLinear.__init__: weight uint8 (out/4, in), weight_scale (1,) "
        "in the model dtype",
    ),
    Layout(
        name="torchao-int8",
        packing=Packing(bits=8, block=(1, 2**62), zero="int64"),
        summary="torchao int8 weight-only: int8, scale (model dtype) and int64 zero point per output row",
        source="torchao quantize_int8 (Int8WeightOnlyConfig): AffineQuantizedTensor.from_hp_to_intx SYMMETRIC, "
        "block (1, in), zero_point_dtype int64; scale in the input dtype",
    ),
    Layout(
        name="nvfp4",
        packing=Packing(bits=4, block=(1, 16), scale_bytes=1, per_tensor=4),
        summary="NVFP4 (compressed-tensors nvfp4-pack-quantized): E2M1 codes, fp8 scale per 16, fp32 global scale",
        source="compressed-tensors NVFP4PackedCompressor.compress_weight: weight_packed uint8 (out, in/2), "
        "weight_scale fp8 (out, in/16), weight_global_scale fp32 (1,)",
        note=_CT_NOTE,
    ),
)
