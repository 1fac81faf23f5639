"""vLLM's MXFP4 expert layout by MoE backend (engines/vllm_mxfp4.py), by hand from vLLM's source:
vllm/model_executor/layers/quantization/mxfp4.py (get_mxfp4_backend, Mxfp4MoEMethod.create_weights,
process_weights_after_loading), utils/mxfp4_utils.py _swizzle_mxfp4, utils/marlin_utils_fp4.py
prepare_moe_fp4_layer_for_marlin, triton_kernels hopper_scale.py / hopper_value.py; and torch.sort's scratch
(pytorch aten/src/ATen/native/cuda/SortStable.cu launch_stable_sort_kernel)."""

from __future__ import annotations

from vramwise.engines.vllm_mxfp4 import FLASHINFER, MARLIN, TRITON, backend_for, experts_term
from vramwise.engines.vllm_terms import sort_scratch
from vramwise.spec.load import catalog_spec

# gpt-oss-120b: 36 MoE layers, 128 experts, hidden 2880, expert intermediate 2880, router with a bias
E, L, H = 128, 36, 2880
ROUTER = (H * E + E) * 2  # ReplicatedLinear(hidden, E) with its bias, bf16, whole on every rank


def test_pip_vllm_takes_marlin_unless_a_backend_is_chosen() -> None:
    # v0.11.0 mxfp4.py get_mxfp4_backend: FlashInfer needs has_flashinfer(), Triton needs has_triton_kernels(); the
    # v0.11.0 wheel's Requires-Dist has neither (flashinfer-python only under the "flashinfer" extra, no
    # triton_kernels), so pip's vLLM falls to "Using Marlin backend" on every NVIDIA GPU
    for cc in ("8.0", "8.9", "9.0", "10.0", "12.0"):
        assert backend_for(cc) is MARLIN
    assert backend_for("9.0", "triton") is TRITON and backend_for("10.0", "flashinfer") is FLASHINFER
    assert backend_for(None) is None  # not NVIDIA: the checkpoint layout stays, and the plan notes it


def test_gpt_oss_120b_on_hopper_keeps_the_scales_twice() -> None:
    term = experts_term(catalog_spec("gpt-oss-120b"), tp=1, compute_capability="9.0", chosen="triton")
    assert term is not None
    # create_weights: round_up(2880, 64) = 2880, hidden unpadded; w13 (5760 x 2880), w2 (2880 x 2880)
    values = 5760 * 2880 // 2 + 2880 * 2880 // 2  # 4-bit values; HopperMXValueLayout: 1440 B % 32 = 0, N % 16 = 0
    original_scales = 5760 * 90 + 2880 * 90  # 2880 / 32 = 90 scale bytes per row, still registered
    swizzled = 5888 * 90 + 3072 * 90  # HopperMXScaleLayout: rows up to a multiple of 256, 90 columns (even)
    bias = (5760 + 2880) * 4  # converted to fp32
    assert term.bytes == L * (E * (values + original_scales + swizzled + bias) + ROUTER)


def test_gpt_oss_120b_under_marlin_pads_both_dimensions() -> None:
    term = experts_term(catalog_spec("gpt-oss-120b"), tp=1, compute_capability="8.0")
    assert term is not None
    # create_weights MARLIN: intermediate round_up(2880, 128) = 2944, hidden round_up(2880, 256) = 3072
    values = (2 * 2944 * 3072 + 3072 * 2944) // 2
    scales = 2 * 2944 * (3072 // 32) + 3072 * (2944 // 32)  # float8_e8m0fnu, one byte each
    bias = (2 * 2944 + 3072) * 2  # params_dtype, bf16
    assert term.bytes == L * (E * (values + scales + bias) + ROUTER)


def test_tensor_parallel_pads_the_shard() -> None:
    # tp 2: FusedMoE shards the intermediate, 1440 per rank; Triton pads it to 1472 (a multiple of 64)
    term = experts_term(catalog_spec("gpt-oss-120b"), tp=2, compute_capability="9.0", chosen="triton")
    assert term is not None and "2880 / tp 2 -> 1472" in term.formula
    values = (2 * 1472 * 2880 + 2880 * 1472) // 2  # 1472 / 2 = 736 B = 23 x 32: the value layout pads nothing
    scales = 2 * 1472 * 90 + 2880 * 46  # 1472 / 32 = 46 scale columns
    swizzled = 3072 * 90 + 3072 * 46  # 2944 and 2880 rows up to 3072
    bias = (2 * 1472 + 2880) * 4
    assert term.bytes == L * (E * (values + scales + swizzled + bias) + ROUTER)


def test_torch_sort_scratch_by_path() -> None:
    # >= 128 rows: segmented_sort_pairs (reverse_indices int64 8 + cub alternate keys 4 and int64 values 8)
    assert sort_scratch(1024) == sort_scratch(128) == 20
    # 2..127 rows: segmented_sort_pairs_by_full_sort (two int2 buffers 8 + 8, keys_out 4, cub alternates 4 + 8)
    assert sort_scratch(127) == sort_scratch(2) == 32
    assert sort_scratch(1) == 0  # one segment: per-row scratch only


def test_the_backend_can_be_chosen_and_is_read_from_the_log() -> None:
    import pytest

    from vramwise.engines.logs import parse_log
    from vramwise.errors import InvalidWorkloadError
    from vramwise.workload.engines import VllmFlags

    # VLLM_MXFP4_USE_MARLIN=1 on a Hopper: the Marlin layout, whatever the compute capability says
    chosen = experts_term(catalog_spec("gpt-oss-120b"), tp=1, compute_capability="9.0", chosen="marlin")
    assert chosen == experts_term(catalog_spec("gpt-oss-120b"), tp=1, compute_capability="8.0")
    with pytest.raises(InvalidWorkloadError, match="allowed: marlin, triton, flashinfer"):
        VllmFlags(mxfp4_backend="cutlass")
    # the lines vLLM prints when it picks a backend (mxfp4.py get_mxfp4_backend, marlin_utils_fp4.py)
    loading = "INFO 01-27 00:31:59 [gpu_model_runner.py:3905] Model loading took 64.38 GiB memory and 14.38 seconds"
    triton = parse_log("INFO 01-27 00:31:44 [mxfp4.py:165] Using Triton backend\n" + loading)
    marlin = parse_log("WARNING 08-20 18:04:08 [marlin_utils_fp4.py:196] Your GPU does not have native support for "
                       "FP4 computation but FP4 quantization is being used. Weight-only FP4 compression will be used "
                       "leveraging the Marlin kernel.\n" + loading)
    assert triton.flags["mxfp4_backend"] == "triton" and marlin.flags["mxfp4_backend"] == "marlin"


def test_a_negative_kv_budget_is_read_signed_and_planned_by_hand() -> None:
    from vramwise.catalog.gpu_spec import get_gpu
    from vramwise.engines.logs import parse_log
    from vramwise.engines.vllm import vllm_figures, vllm_plan
    from vramwise.workload import InferSetup

    # vllm-project/vllm issue 23278 (0.10.1, one H100, Marlin): "Available KV cache memory: -2.14 GiB"
    parsed = parse_log("INFO 08-20 18:04:22 [gpu_worker.py:276] Available KV cache memory: -2.14 GiB")
    assert [f.value for f in parsed.figures if f.name == "kv_cache"] == [round(-2.14 * 2**30)]
    h100 = get_gpu("h100-80gb")
    plan = vllm_plan(catalog_spec("gpt-oss-120b"), InferSetup.from_flat(engine="vllm", mxfp4_backend="marlin"), h100)
    marlin = L * (E * ((3 * 2944 * 3072) // 2 + 3 * 2944 * 96 + (2 * 2944 + 3072) * 2) + ROUTER)
    rest = 2 * 201_088 * 2880 * 2 + 1_911_610_368 + 420_480  # embedding, untied head, attention, norms (bf16)
    # the rotary table (gpt_oss.py GptOssAttention: get_rope(..., dtype=torch.float32)): 131,072 positions x
    # head_dim 64 x 4 B (the catalog entry states no rope_scaling; yarn's original 4,096 x factor 32 is the same)
    rest += 131_072 * 64 * 4
    # sampler warm-up at torch.sort (test_vllm.py's llama-2-7b test) + torch's 32 MiB cuBLAS workspace (9.0)
    # (and the two copies of the 1024 sampled hidden rows)
    peak = 1024 * 201_088 * 38 + 8192 * 2880 * 2 + 2 * 1024 * 2880 * 2 + 4096 * 8 * 1024
    assert vllm_figures(plan)["available_kv_cache"] == int(0.9 * h100.memory_bytes) - marlin - rest - peak < 0


def test_marlin_experts_profile_the_unchunked_marlin_moe() -> None:
    from vramwise.catalog.gpu_spec import get_gpu
    from vramwise.engines.vllm import vllm_plan
    from vramwise.workload import InferSetup

    # MXFP4 experts on Marlin run fused_marlin_moe (no VLLM_FUSED_MOE_CHUNK_SIZE loop); the Triton backend's
    # layout still profiles as fused_experts (engines/vllm_terms.py _moe_live)
    h100 = get_gpu("h100-80gb")
    spec = catalog_spec("gpt-oss-120b")
    marlin = vllm_plan(spec, InferSetup.from_flat(engine="vllm", mxfp4_backend="marlin"), h100)
    triton = vllm_plan(spec, InferSetup.from_flat(engine="vllm", mxfp4_backend="triton"), h100)
    assert "fused_marlin_moe" in marlin.estimate.term("activations/profile_peak").formula
    assert "fused_marlin_moe" not in triton.estimate.term("activations/profile_peak").formula
