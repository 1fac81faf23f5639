"""The dequantization workspace: a layer that dequantizes its whole weight before a 16-bit matmul.

bitsandbytes 4-bit does so for every forward of more than one token (autograd/_functions.py matmul_4bit ->
MatMul4Bit.forward: ``F.dequantize_4bit(B, quant_state).to(A.dtype)``); one token takes the fused gemv_4bit.
HQQ's PyTorch backend does so for every forward (HQQLinear.forward_pytorch). One layer runs at a time, so the
largest quantized weight (this GPU's tensor-parallel shard) is the workspace. Fused kernels (GPTQ/AWQ Marlin and
ExLlama, fp8, MXFP4 triton) dequantize tile by tile and hold no such copy.
"""

from __future__ import annotations

import functools

from vramwise.estimate.plan import Rule, constant
from vramwise.estimate.sharding import shard_fraction
from vramwise.estimate.term import Term
from vramwise.formats import StorageFormat
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups


@functools.lru_cache(maxsize=256)
def dequantized_weight(spec: ModelSpec, fmt: StorageFormat, *, c: int, tp: int) -> tuple[Rule | None, str | None]:
    """One weight dequantized for its matmul (None when the format's kernels never dequantize one), and a note.

    bitsandbytes dequantizes to the weight's own 16-bit dtype (QuantState.dtype), then ``.to(A.dtype)``: with
    ``bnb_4bit_compute_dtype`` float32 (the config's default) Linear4bit.forward has cast the input to fp32, so a
    4-byte copy joins the 2-byte one during the cast."""
    if not fmt.dequant:
        return None, None
    largest, name = 0, ""
    for g in parameter_groups(spec):
        quantized = fmt.tensor_bytes(g, spec, c).bytes < g.count * c  # what the format stores below 16 bit
        if g.kind == "linear" and g.tensors and quantized:
            one = round(g.count // g.tensors * shard_fraction(g, spec, tp))
            if one > largest:
                largest, name = one, g.name
    if not largest:
        return None, None
    fp32 = spec.stored_format == fmt.name and spec.quant_compute_dtype == "fp32" and c < 4
    width, why = (c + 4, f"{c} B dequantized + 4 B fp32 copy") if fp32 else (c, f"{c} B")
    note = (
        "bnb_4bit_compute_dtype float32: each 4-bit matmul also casts its input and output to fp32 "
        "(Linear4bit.forward), not counted in the prefill workspace"
        if fp32
        else None
    )
    rule = constant(
        Term(
            name="activations/dequantized_weight",
            bytes=largest * width,
            formula=f"largest quantized weight {name}: {largest:,} x ({why}), dequantized for its matmul",
            source=f"{fmt.name}: the layer dequantizes its weight before a 16-bit matmul (estimate/dequant.py)",
        )
    )
    return rule, note
