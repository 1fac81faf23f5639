"""vLLM's V1 plan under --vllm-version 0.9 (v0.9.2) and 0.10 (v0.10.0-v0.10.2): vLLM 0.11.0's rules but for where the
first memory snapshot is taken (engines/vllm_releases.py). Worker.init_device takes ``init_snapshot`` before
``init_worker_distributed_environment`` (vllm/v1/worker/gpu_worker.py v0.9.2 lines 140 and 158), so the NCCL
communicators and custom all-reduce count inside the budget as non-torch growth, the CUDA context stays outside.

Oracles: the arithmetic written out here, each step naming the vLLM function it mirrors. The communicators' own
sizes are the NCCL model's (estimate/nccl.py, vllm_comms.py); what is checked is how many there are and where they
count, against v0.8.5's plan (one tp communicator) and v0.11.0's (the same groups, outside the budget).
"""

from __future__ import annotations

from vramwise.catalog import get_gpu
from vramwise.engines.vllm import vllm_figures, vllm_plan
from vramwise.engines.vllm_releases import V1_RULES, capture_sizes_v010, capture_sizes_v085
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup

MIB = 2**20
H100 = get_gpu("h100-80gb")


def _plan(version: str, **flat):  # type: ignore[no-untyped-def]
    setup = InferSetup.from_flat(engine="vllm", vllm_version=version, **flat)
    return vllm_plan(catalog_spec("llama-2-7b"), setup, H100)


def _terms(p) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {t.name: t.bytes for t in p.estimate.persistent}


def test_capture_sizes_by_release() -> None:
    # v0.10.x: cuda_graph_sizes = [min(2 x max_num_seqs, 512)] (SchedulerConfig), then [1, 2, 4] + every 8 up to it
    assert capture_sizes_v010(256, 8192) == (1, 2, 4, *range(8, 513, 8))
    assert capture_sizes_v010(64, 8192) == (1, 2, 4, *range(8, 129, 8))
    assert max(capture_sizes_v010(1024, 100)) == 96  # none above max_num_batched_tokens
    # v0.9.2: cuda_graph_sizes defaults to [512] whatever max_num_seqs: v0.8.5's rule
    assert V1_RULES["0.9"].capture_sizes is capture_sizes_v085 and V1_RULES["0.10"].capture_sizes is capture_sizes_v010


def test_tp1_is_v0110s_pool() -> None:
    # no communicator at tp 1, the context outside the budget in both: the same KV pool and tokens
    nine, eleven = _plan("0.9"), _plan("0.11")
    assert _terms(nine)["kv_cache/pool"] == _terms(eleven)["kv_cache/pool"] and nine.kv_tokens == eleven.kv_tokens
    assert nine.version == "0.9.2" and _plan("0.10").version == "0.10.2"


def test_tp2_counts_the_tp_communicators_inside_the_budget() -> None:
    for version in ("0.9", "0.10"):
        p, eleven, eight = _plan(version, tp=2), _plan("0.11", tp=2), _plan("0.8", tp=2)
        t, t11, t8 = _terms(p), _terms(eleven), _terms(eight)
        # initialize_model_parallel builds the ep group (dp x tp = 2 GPUs) beside tp from v0.9.x, but v0.9.2 and
        # v0.10.2 give it no PyNccl (device_communicators/cuda_communicator.py CudaCommunicator.__init__: "ep does
        # not use pynccl"): one PyNccl communicator, the tp group's, as v0.8.5; v0.11.0 gives ep one too and counts
        # both outside its budget. Each: 32 ring channels x 12 MiB (H100 SXM; p2p.cc send 6 MiB + receive 6 MiB
        # under P2P read); v0.9.2 sets NCCL_CUMEM_ENABLE=0 (env_override.py), as 0.8.5 does; v0.10.2 and v0.11.0
        # leave cuMem on, which adds (3 x 32 + 2) x 2 MiB of initChannel / devCommSetup allocations per communicator
        ring = 32 * 12 * MIB
        assert t8["overhead/nccl"] == ring
        one = ring if version == "0.9" else ring + (3 * 32 + 2) * 2 * MIB
        assert t["overhead/nccl"] == one
        assert t11["overhead/nccl"] == 2 * (ring + (3 * 32 + 2) * 2 * MIB)
        # the profile run's logits all-gather makes torch's own tp communicator (vllm_comms.py logits_gather_term),
        # the same buffers as the PyNccl one, inside the budget at every release
        assert t["overhead/nccl_torch"] == one and t8["overhead/nccl_torch"] == ring
        assert t11["overhead/nccl_torch"] == ring + (3 * 32 + 2) * 2 * MIB
        assert t["overhead/custom_all_reduce"] == t11["overhead/custom_all_reduce"]
        # VLLM_ALLREDUCE_USE_SYMM_MEM defaults to 0 at v0.10.2 (1 at v0.11.0): no symmetric-memory buffer
        assert "overhead/symm_mem" not in t and "overhead/symm_mem" in t11
        # memory_profiling's non_torch_increase
        inside = t["overhead/nccl"] + t["overhead/custom_all_reduce"] + t["overhead/nccl_torch"]
        weights = sum(b for n, b in t.items() if n.startswith("weights/"))
        available = int(0.9 * H100.memory_bytes) - weights - t["activations/profile_peak"] - inside
        assert vllm_figures(p)["non_torch"] == inside and vllm_figures(p)["available_kv_cache"] == available
        page = 16 * 2 * (32 // 2) * 128 * 2  # a block of 16 tokens, K and V, 16 of 32 heads per rank, bf16
        assert t["kv_cache/pool"] == available // (page * 32) * page * 32
        assert p.kv_tokens is not None and eleven.kv_tokens is not None and p.kv_tokens < eleven.kv_tokens
        assert any("PR #25359" in n for n in p.estimate.notes)


def test_the_free_memory_check_sees_only_the_context() -> None:
    # init_device (v0.9.2 lines 140-143): MemorySnapshot() and "Free memory on device ... is less than desired GPU
    # memory utilization" come before init_worker_distributed_environment (line 158): the communicators are not
    # there yet. A utilization that leaves the context and a bit more passes at 0.9.2; at 0.11.0 the tp 8
    # communicators (tp and ep: two of them) are already allocated and it fails.
    context = 512 * 2**20
    nine, eleven = _plan("0.9", tp=8), _plan("0.11", tp=8)
    comms = sum(b for n, b in _terms(eleven).items() if n.startswith("overhead/") and n != "overhead/cuda_context")
    util = (H100.memory_bytes - context - comms // 2) / H100.memory_bytes
    nine, eleven = _plan("0.9", tp=8, gpu_utilization=util), _plan("0.11", tp=8, gpu_utilization=util)
    assert nine.refusal != "free memory below gpu_memory_utilization"
    assert eleven.refusal == "free memory below gpu_memory_utilization"
