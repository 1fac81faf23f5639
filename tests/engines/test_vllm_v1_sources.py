"""vLLM's V1 plan against the engine's source at its tags (/work/vllm-src sdists: 0.8.5, 0.9.2, 0.10.1.1, 0.10.2,
0.11.0), on the corpus case that reads them most: Qwen3-235B-A22B-FP8 at tp 4 on H100 SXM (issue 21348's setup,
bench/data/engine_logs/vllm-qwen3-235b-a22b-fp8-h100-tp4-1.log).

Oracle: the arithmetic below, each step naming the vLLM function it mirrors; the NCCL communicator's bytes are the
NCCL model's (estimate/nccl.py), written out here from its rules.
"""

from __future__ import annotations

from pathlib import Path

from vramwise.catalog import get_gpu
from vramwise.engines.vllm import vllm_figures, vllm_plan
from vramwise.engines.vllm_terms import fp8_activation_group
from vramwise.spec.load import resolve_model
from vramwise.workload import InferSetup

MIB = 2**20
H100 = get_gpu("h100-80gb")
CONFIG = Path(__file__).parents[2] / "bench/data/engine_logs/configs/qwen3-235b-a22b-fp8.json"

# One NCCL communicator of 4 H100 SXM GPUs with NCCL_CUMEM_ENABLE=0 (vLLM 0.9.2's env_override.py) and NVLS on:
# ring 32 channels x 12 MiB, the tree connected at init (no runtime connect) 32 x 12 MiB more, NVLS buffers
# 16 channels x 2 x (128 KiB x 8 steps) x 4 GPUs = 128 MiB and their credits rounded to one 2 MiB allocation
COMM_CUMEM_OFF = 32 * 12 * MIB + 32 * 12 * MIB + 128 * MIB + 2 * MIB
# The same with cuMem on (v0.10.2, v0.11.0): runtime connect, no tree; (3 x 32 + 2) x 2 MiB per-channel structures
COMM_CUMEM_ON = 32 * 12 * MIB + 128 * MIB + 2 * MIB + (3 * 32 + 2) * 2 * MIB


def _plan(version: str):  # type: ignore[no-untyped-def]
    setup = InferSetup.from_flat(engine="vllm", tp=4, vllm_version=version)
    return vllm_plan(resolve_model(str(CONFIG)), setup, H100)


def _terms(p) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {t.name: t.bytes for t in p.estimate.persistent}


def test_v092_one_pynccl_communicator_and_torchs_own() -> None:
    t = _terms(_plan("0.9"))
    # parallel_state.initialize_model_parallel builds tp (4), pp (1), dp (1) and ep (dp x tp = 4) groups;
    # cuda_communicator.py CudaCommunicator.__init__ at v0.9.2: use_pynccl = "ep" not in unique_name -> only tp
    assert t["overhead/nccl"] == COMM_CUMEM_OFF
    # profile_run -> _dummy_sampler_run -> compute_logits -> LogitsProcessor._gather_logits (use_all_gather under
    # V1) -> DeviceCommunicatorBase.all_gather -> dist.all_gather_into_tensor(device_group): torch's ProcessGroupNCCL
    # makes its own communicator of the tp group there, after the snapshot
    assert t["overhead/nccl_torch"] == COMM_CUMEM_OFF
    # CustomAllreduce: two IPC buffers of max_size 8 MiB and rank_data 8 MiB (tp group only)
    assert t["overhead/custom_all_reduce"] == 24 * MIB


def test_v092_pool_by_hand() -> None:
    p = _plan("0.9")
    t = _terms(p)
    weights = sum(b for n, b in t.items() if n.startswith("weights/"))
    # gpu_model_runner.py profile_run at v0.9.2: _dummy_run(8192) keeps every token's hidden state (8192 x 4096 bf16)
    # and its 1024 sampled rows twice (hidden_states[logit_indices], torch.rand_like); _dummy_sampler_run over
    # min(max_num_seqs 1024, 8192) rows: the gathered bf16 logits (151,936, a multiple of 64) and, at the sort,
    # the fp32 copy 4 + sort values 4 + int64 indices 8 + torch.sort's scratch 20 B per logit (1024 >= 128 rows:
    # segmented_sort_pairs); then torch's cuBLAS workspace on sm 9.0, 32 MiB
    rows, vocab, h = 1024, 151936, 4096
    sampler = rows * vocab * 2 + rows * vocab * 36 + (8192 + 2 * rows) * h * 2
    peak = sampler + 32 * MIB
    assert t["activations/profile_peak"] == peak
    # memory_profiling: non_torch_increase since init_snapshot, taken before init_worker_distributed_environment
    # (gpu_worker.py init_device at v0.9.2): the PyNccl tp communicator, custom all-reduce, torch's communicator
    inside = COMM_CUMEM_OFF + 24 * MIB + COMM_CUMEM_OFF
    available = int(0.9 * H100.memory_bytes) - weights - peak - inside
    assert vllm_figures(p)["available_kv_cache"] == available
    # kv_cache_utils.py _get_kv_cache_config_uniform_type / get_num_blocks: available // page // 94 layers, a page
    # of 16 tokens x K and V x 1 kv head of 4 per rank x 128 x bf16 = 8,192 B; "GPU KV cache size" = blocks x 16
    page = 16 * 2 * 1 * 128 * 2
    blocks = available // page // 94
    assert p.kv_tokens == blocks * 16 and t["kv_cache/pool"] == blocks * page * 94


def test_v0110_counts_only_torchs_communicator_inside() -> None:
    p = _plan("0.11")
    t = _terms(p)
    # v0.11.0 gives ep a PyNccl communicator too (tp and ep), both set up before init_snapshot: outside the budget
    assert t["overhead/nccl"] == 2 * COMM_CUMEM_ON
    # torch's tp communicator comes later, in the profile run: the one communicator the budget sees
    assert t["overhead/nccl_torch"] == COMM_CUMEM_ON
    assert vllm_figures(p)["non_torch"] == COMM_CUMEM_ON


def test_fp8_experts_quantize_their_activations() -> None:
    from vramwise.engines.vllm_terms import forward_live

    # quantization/fp8.py Fp8MoEMethod.__init__ (v0.9.2, v0.11.0): w8a8 from compute capability 8.9, Marlin below;
    # fused_experts' activations: per_token_group_quant_fp8 with block_shape[1], or one per-tensor scale
    assert fp8_activation_group("fp8-block", "9.0") == 128 and fp8_activation_group("fp8-block1x128", "8.9") == 128
    assert fp8_activation_group("fp8-e4m3", "9.0") == 0
    assert fp8_activation_group("fp8-block", "8.0") is None and fp8_activation_group("bf16", "9.0") is None
    spec = resolve_model(str(CONFIG))
    # fused_experts_impl (fused_moe.py) for 8192 tokens at tp 4: h 4096, E 128, top_k 8, i = 1536 / 4 = 384;
    # M = min(8192, VLLM_FUSED_MOE_CHUNK_SIZE 32768) = 8192
    per_token = (2 * 4096 + 128 + 4096) * 2 + 8 * 12  # residual, input, router logits, output; topk weights/ids
    caches = 8192 * 8 * (max(2 * 384, 4096) + 384) * 2  # cache13 (shared by 1 and 3) and cache2, bf16
    padded = 8192 * 8 + 128 * 63  # moe_align_block_size: sorted_ids, BLOCK_SIZE_M 64
    align = (padded + -(-padded // 64)) * 4
    # qcurr_hidden_states 8192 x 4096 fp8 + scales 8192 x 32 fp32; qintermediate_cache2 65,536 x 384 fp8 + 65,536 x 3
    quant = 8192 * 4096 + 8192 * 8 * 384 + (8192 * 32 + 8192 * 8 * 3) * 4
    got, _ = forward_live(spec, tokens=8192, c=2, tp=4, fp8_group=128)
    assert got == 8192 * per_token + caches + align + quant == 852_267_000
