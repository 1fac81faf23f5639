"""How vLLM lays out an MXFP4 checkpoint's routed experts (gpt-oss) on the GPU, by MoE backend.

vLLM does not keep the checkpoint's tensors as they are: ``Mxfp4MoEMethod.create_weights``
(vllm/model_executor/layers/quantization/mxfp4.py) pads the expert dimensions for the backend it picked
(``get_mxfp4_backend``), and ``process_weights_after_loading`` converts them for that backend's kernel. What
"Model loading took X GiB" measures is what stays allocated afterwards (vllm/platforms/cuda.py
``get_current_memory_usage``: torch's allocated bytes), so the layout below, not the checkpoint's, is the weight.

Which backend: ``get_mxfp4_backend`` at the v0.11.0 tag (mxfp4.py lines 59-107) takes FlashInfer only where
FlashInfer is installed (``has_flashinfer()``; an extra, ``vllm[flashinfer]``) and Triton only where the optional
``triton_kernels`` package is (``has_triton_kernels()`` = ``_has_module("triton_kernels")``, vllm/utils/__init__.py)
and torch >= 2.8; otherwise "Using Marlin backend", on every NVIDIA GPU. ``pip install vllm==0.11.0`` installs
neither (the wheel's Requires-Dist lists torch==2.8.0 and flashinfer-python only under the ``flashinfer`` extra; no
triton_kernels, none vendored in the wheel), so the plan's default is Marlin, as the 0.10.1 log of
bench/data/engine_logs shows on an H100 ("... leveraging the Marlin kernel", 65.97 GiB). With them installed the
backend follows the GPU generation below (source read at vllm-project/vllm commit 007d500 of mxfp4.py, the layout
of the 0.11-0.14 releases; the 0.14.1 log prints "mxfp4.py:165 Using Triton backend" on an H100): say so with
``--mxfp4-backend triton|flashinfer``; ``verify --log`` reads the backend line a log prints.

- compute capability below 9.0 (Ampere, Ada) or 11.0 and above: **Marlin** (triton_kernels are used only for
  ``(9, 0) <= capability < (11, 0)``). create_weights pads the intermediate size per partition to a multiple of
  128 and the hidden size to 256 ("The moe marlin kernel requires that for each linear n % 256 == 0 and
  k % 128 == 0"); marlin_utils_fp4.py ``prepare_moe_fp4_layer_for_marlin`` repacks the 4-bit weights (the same
  bytes), permutes the scales to float8_e8m0fnu (1 byte each) and the biases to params_dtype (bf16);
- 9.0 (Hopper): **Triton** (triton_kernels matmul_ogs). The intermediate size is padded to 64; the weights are
  swizzled (``_swizzle_mxfp4``: HopperMXValueLayout pads the packed K bytes to 32 and N to 16) and the original
  weight deleted, but the scales are swizzled into a new tensor (HopperMXScaleLayout pads N to
  2 x num_warps x 2 x 8 = 256 with num_warps 8, and the scale columns to 2) while ``layer.w13_weight_scale`` /
  ``w2_weight_scale`` stay registered: the scales are held twice. The biases are converted to fp32;
- 10.x (Blackwell, FlashInfer installed): **FlashInfer TRT-LLM MXFP4 x BF16** (SM100_FI_MXFP4_BF16):
  intermediate and hidden padded to 256, the shuffled weights and interleaved scales replace the originals,
  the biases converted to fp32.

A GPU without a compute capability in the catalog (AMD, Apple, a custom size) keeps the checkpoint's layout,
and says so in the plan's notes.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.estimate.term import Term
from vramwise.spec.model import ModelSpec

_SRC = "vllm/model_executor/layers/quantization/mxfp4.py"
MXFP4_BLOCK = 32  # mxfp4.py create_weights: mxfp4_block = 32 (one E8M0 scale byte per 32 values)
# HopperMXScaleLayout.swizzle_data: SWIZZLE_ALIGN_M = 2 * num_warps * 2 * 8, SWIZZLE_ALIGN_K = 2 (triton_kernels
# tensor_details/layout_details/hopper_scale.py); num_warps 8 outside the batched (pplx/DeepEP) MoE
# (mxfp4.py process_weights_after_loading, TRITON branch).
HOPPER_SCALE_ALIGN_N = 2 * 8 * 2 * 8
HOPPER_SCALE_ALIGN_K = 2
# HopperMXValueLayout.swizzle_data (mma v3, u8_kwidth 1): the non-mx axis packs k_tile 1 x warp_tile 2 x threads 4
# x scott_trick 2 x contig 1 = 16, the packed-byte mx axis 4 x 2 x 4 x 1 x 1 = 32 (hopper_value.py).
HOPPER_VALUE_ALIGN_N = 16
HOPPER_VALUE_ALIGN_K_BYTES = 32


@dataclass(frozen=True)
class Mxfp4Layout:
    backend: str
    inter_align: int  # intermediate size per partition rounded up to this
    hidden_align: int  # hidden size rounded up to this (1: unpadded)
    bias_bytes: int
    scales_twice: bool  # the original scales stay registered beside the swizzled copy (Triton)
    why: str


MARLIN = Mxfp4Layout("Marlin", 128, 256, 2, False,
                     "create_weights MARLIN branch: round_up(intermediate, 128), round_up(hidden, 256); "
                     "prepare_moe_fp4_layer_for_marlin: scales float8_e8m0fnu, biases params_dtype")
TRITON = Mxfp4Layout("Triton (triton_kernels, Hopper layouts)", 64, 1, 4, True,
                     "create_weights: round_up(intermediate, 64); process_weights_after_loading TRITON branch: "
                     "biases .to(float32), _swizzle_mxfp4 (HopperMXValueLayout, HopperMXScaleLayout); "
                     "layer.w13_weight_scale / w2_weight_scale are not deleted")
FLASHINFER = Mxfp4Layout("FlashInfer TRT-LLM MXFP4xBF16", 256, 256, 4, False,
                         "create_weights SM100_FI branch: round_up(intermediate, 256), round_up(hidden, 256); "
                         "process_weights_after_loading: biases .to(float32), shuffled tensors replace the originals")


def _up(n: int, m: int) -> int:
    return -(-n // m) * m


BY_NAME = {"marlin": MARLIN, "triton": TRITON, "flashinfer": FLASHINFER}


def backend_for(compute_capability: str | None, chosen: str | None = None) -> Mxfp4Layout | None:
    """The backend ``chosen`` (--mxfp4-backend; VLLM_MXFP4_USE_MARLIN=1 is "marlin"), else ``get_mxfp4_backend``
    of v0.11.0 as pip installs it (no FlashInfer, no triton_kernels: Marlin on every NVIDIA GPU, the module
    docstring); None: not NVIDIA and none chosen."""
    if chosen is not None:
        return BY_NAME[chosen]
    if not compute_capability:
        return None
    return MARLIN



def experts_term(
    spec: ModelSpec, *, tp: int, compute_capability: str | None, chosen: str | None = None
) -> Term | None:
    """The routed experts (and the bf16 router) as vLLM holds them on one tp rank; None when vLLM's backend is
    unknown for this GPU (the checkpoint layout is kept)."""
    lay = backend_for(compute_capability, chosen)
    moe = spec.moe
    if lay is None or moe is None or not moe.moe_layers:
        return None
    E, L, h = moe.num_experts, len(moe.moe_layers), spec.hidden_size
    i = _up(moe.expert_intermediate_size // tp, lay.inter_align)  # FusedMoE: intermediate_size // tp_size
    H = _up(h, lay.hidden_align)
    # (rows N, columns K) of the two matrices: w13 is (2i, H), w2 is (H, i); 4-bit values, K/32 scale bytes.
    mats = ((2 * i, H), (H, i))
    values = sum(n * k // 2 for n, k in mats)
    scales = sum(n * (k // MXFP4_BLOCK) for n, k in mats)
    parts = [f"w13 {2 * i}x{H} + w2 {H}x{i} (intermediate {moe.expert_intermediate_size} / tp {tp} -> {i}, "
             f"hidden {h} -> {H}): values {values:,} B + scales {scales:,} B"]
    if lay is TRITON:
        values = sum(_up(n, HOPPER_VALUE_ALIGN_N) * _up(k // 2, HOPPER_VALUE_ALIGN_K_BYTES) for n, k in mats)
        swizzled = sum(_up(n, HOPPER_SCALE_ALIGN_N) * _up(k // MXFP4_BLOCK, HOPPER_SCALE_ALIGN_K) for n, k in mats)
        parts.append(f"swizzled values {values:,} B, swizzled scales {swizzled:,} B (N to {HOPPER_SCALE_ALIGN_N}) "
                     f"beside the original scales {scales:,} B")
        scales += swizzled
    bias = (2 * i + H) * lay.bias_bytes  # w13_bias (E, 2i), w2_bias (E, hidden)
    router = h * E + (E if moe.router_bias else 0)  # ReplicatedLinear(hidden, E) in bf16, whole on every rank
    per_layer = E * (values + scales + bias) + router * 2
    return Term(
        name="weights/experts",
        bytes=L * per_layer,
        formula=f"{L} layers x ({E} experts x ({'; '.join(parts)}; biases {2 * i + H} x {lay.bias_bytes} B) "
                f"+ router {router:,} x 2 B) [vLLM MXFP4 backend: {lay.backend}]",
        source=f"{_SRC} get_mxfp4_backend, Mxfp4MoEMethod.create_weights, process_weights_after_loading "
               f"({lay.why}); utils/mxfp4_utils.py _swizzle_mxfp4",
    )
