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
def dequantized_weight(spec: ModelSpec, fmt: StorageFormat, *, c: int, tp: int) -> Rule | None:
    """One weight in the compute dtype (``c`` bytes), or None when the format's kernels never dequantize one."""
    if not fmt.dequant:
        return None
    largest, name = 0, ""
    for g in parameter_groups(spec):
        quantized = fmt.tensor_bytes(g, spec, c).bytes < g.count * c  # what the format stores below 16 bit
        if g.kind == "linear" and g.tensors and quantized:
            one = round(g.count // g.tensors * shard_fraction(g, spec, tp))
            if one > largest:
                largest, name = one, g.name
    if not largest:
        return None
    return constant(
        Term(
            name="activations/dequantized_weight",
            bytes=largest * c,
            formula=f"largest quantized weight {name}: {largest:,} x {c} B, dequantized for its matmul",
            source=f"{fmt.name}: the layer dequantizes its weight before a 16-bit matmul (estimate/dequant.py)",
        )
    )
