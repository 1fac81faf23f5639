"""The rules that differ between the V1 releases vLLM's V1 plan (engines/vllm.py) follows, keyed by --vllm-version.

``"0.11"`` is v0.11.0. ``"0.8"`` is the V1 engine before vLLM moved its first memory snapshot and adopted
``memory_profiling`` in V1: read at v0.8.5 (the pip sdist); it holds for 0.8.x, and for 0.7.x but for the two
v0.7.1 differences below. v0.9.0 keeps its budget rule (below) but already has the A100 batch-default exception and
other capture sizes. ``"0.9"`` (v0.9.2) and ``"0.10"`` (read at v0.10.0 and v0.10.2) take ``init_snapshot =
MemorySnapshot()`` in ``Worker.init_device`` before ``init_worker_distributed_environment`` (vllm/v1/worker/
gpu_worker.py v0.9.2 lines 140 and 158, v0.10.0 lines 163 and 181, v0.10.2 lines 175 and 193) and size the pool with
``memory_profiling`` (determine_available_memory): the CUDA context outside the budget, the communicators inside it
(``non_torch_increase``), the third rule; v0.11.0 moved the distributed init before the snapshot (vllm-project/vllm
PR #25359).

Each field says what vLLM 0.8.5 does differently from 0.11.0, with file and line at the v0.8.5 tag; ``ep_group``,
``symm_mem`` and the capture sizes say where 0.9.2-0.10.x stand.

Read at v0.7.1 (the pip sdist), the V1 engine keeps v0.8.5's budget rule (vllm/v1/worker/gpu_worker.py
determine_available_memory lines 157-192, the same arithmetic), capture sizes (vllm/config.py _set_cudagraph_sizes:
1, 2, 4 and every 8 to 512) and block count (vllm/v1/core/kv_cache_utils.py line 386; concurrency num_blocks x
block_size / max_model_len, line 398, the same number as 0.8.5's tokens / max_model_len), but differs in two places
the 0.8 plan does not follow: its profile run has no sampler warm-up and computes the logits of every one of the
max_num_batched_tokens rows (vllm/v1/worker/gpu_model_runner.py profile_run lines 985-988, "TODO: Consider the
memory usage of the sampler"), and its batch defaults are max_num_seqs 1024 on every GPU (vllm/engine/arg_utils.py
line 214) with 8192 batched tokens for `vllm serve` only on a device named H100 or H200 (_override_v1_engine_args
lines 1292-1303), 2048 elsewhere. v0.7.3 is v0.7.1 but for the logits: its profile run computes them for
max_num_seqs rows only (``hidden_states[logit_indices]``, profile_run lines 1285-1306), still without a sampler. The
sampler warm-up is in v0.8.0 (``_dummy_sampler_run``). The plan says so in a note (engines/vllm.py _notes).

Within 0.8.x the batch defaults moved (vllm/engine/arg_utils.py ``_set_default_args_v1``): v0.8.0 takes
max_num_seqs 1024 on every GPU and the large max_num_batched_tokens for a device named H100 or H200 (lines
1693-1717); v0.8.4 keeps the name rule and gives other GPUs 256 sequences (lines 1669-1682); v0.8.5 decides by 70 GiB
of device memory (lines 1596-1609), which the plan follows. For an 0.8.0-0.8.4 run on another GPU than those, give
--max-num-seqs / --max-num-batched-tokens as its release set them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class V1Rules:
    release: str  # the release the plan reports (EngineEstimate.version)
    # v0.8.5 vllm/v1/worker/gpu_worker.py determine_available_memory lines 194-210: available = utilization x total
    # - (torch's allocated peak + (mem_get_info used - torch allocated)): every byte outside torch counts inside the
    # budget, the CUDA context and the NCCL / custom all-reduce buffers set up in init_device (line 135) too.
    # v0.11.0: only the growth since init_snapshot, taken after the distributed init (vllm_comms.py).
    context_in_budget: bool
    comms_in_budget: bool
    # v0.8.5 has no startup check of free memory against the budget (init_device lines 112-146 only records
    # init_gpu_memory); v0.11.0 refuses below it (Worker.init_device).
    free_memory_check: bool
    # v0.8.5 vllm/v1/worker/gpu_model_runner.py _dummy_run line 1509 returns only hidden_states[logit_indices]: the
    # sampler warm-up holds one hidden row per dummy request; v0.11.0 keeps all max_num_batched_tokens rows, and
    # beside them the indexed rows and their torch.rand_like replacement (_dummy_sampler_run line 3190; v0.9.2 line
    # 2093, v0.10.2 line 2847).
    sampler_holds_all_tokens: bool
    # v0.8.5 vllm/engine/arg_utils.py get_batch_defaults lines 1596-1609: 8192 tokens and 1024 sequences from 70 GiB,
    # no A100 exception (added in v0.9.0, vLLM PR #17885).
    a100_exception: bool
    capture_sizes: Callable[[int, int], tuple[int, ...]]
    # v0.8.5 vllm/v1/core/kv_cache_utils.py unify_hybrid_kv_cache_specs lines 657-681: a model mixing sliding-window
    # and full layers caches every layer at full length (one group); no Mamba spec in V1 yet (MambaSpec arrives with
    # the hybrid allocator, v0.9.2 vllm/v1/kv_cache_interface.py).
    hybrid_groups: bool
    # v0.8.5 kv_cache_utils.py _get_kv_cache_config_uniform_type line 636: concurrency = num_tokens / max_model_len
    concurrency_by_tokens: bool
    # The expert-parallel group (vllm/distributed/parallel_state.py initialize_model_parallel: ``_EP`` of
    # data_parallel x tp GPUs, from v0.9.x; v0.8.5 builds only tp, pp and dp groups): the release sets its
    # communicators up as vllm_comms.py v1_comm_terms counts them
    ep_group: bool = True
    # Whether that ep group gets a PyNccl communicator: v0.9.2, v0.10.1.1 and v0.10.2
    # vllm/distributed/device_communicators/cuda_communicator.py CudaCommunicator.__init__: "ep does not use
    # pynccl" (``use_pynccl = "ep" not in unique_name``); v0.11.0 creates one for every group of > 1 GPU
    ep_pynccl: bool = True
    # torch symmetric-memory all-reduce: VLLM_ALLREDUCE_USE_SYMM_MEM defaults to 1 at v0.11.0, to 0 at v0.10.2
    # (vllm/envs.py), and device_communicators/symm_mem.py does not exist before v0.10.2
    symm_mem: bool = True
    # v0.8.5 determine_available_memory reserves torch's absolute allocated peak, so the model runner's persistent
    # buffers (made before the weights) count inside the budget (engines/vllm_v085.py runner_buffers); v0.9.2+ take
    # the peak's increase during the profile run (vllm/utils.py memory_profiling), which leaves them out
    runner_buffers_in_budget: bool = False
    # --vllm-sampler flashinfer: v0.8.5 topk_topp_sampler.py TopKTopPSampler.__init__ samples with FlashInfer
    # (forward_cuda) when FlashInfer < 0.2.3 is installed, as in vLLM's v0.8.5 docker image (engines/vllm_v085.py);
    # v0.9.2, v0.10.1.1, v0.10.2 and v0.11.0 when FlashInfer >= 0.2.3 is installed (pip's vLLM has it only as the
    # ``flashinfer`` extra: setup.py extras_require), through top_k_top_p_sampling_from_logits (engines/vllm_terms.py
    # flashinfer_v1_sampler_warmup); the V1 releases whose sampler was read
    flashinfer_sampler: bool = True


def capture_sizes_v011(max_num_seqs: int, max_num_batched_tokens: int) -> tuple[int, ...]:
    """v0.11.0: 1, 2, 4, every 8 to 248, every 16 up to min(2 x max_num_seqs, 512), none above
    max_num_batched_tokens (vllm/config/__init__.py ``VllmConfig._set_cudagraph_sizes``)."""
    largest = min(2 * max_num_seqs, 512)
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, largest + 1, 16)]
    return tuple(s for s in sizes if s <= min(largest, max_num_batched_tokens))


def capture_sizes_v085(max_num_seqs: int, max_num_batched_tokens: int) -> tuple[int, ...]:
    """v0.8.5 (V1): 1, 2, 4, then every 8 to 512, none above max_num_batched_tokens; max_num_seqs plays no part
    (vllm/config.py ``VllmConfig._set_cudagraph_sizes`` lines 4035-4046)."""
    del max_num_seqs
    sizes = [1, 2, 4, *range(8, 513, 8)]
    return tuple(s for s in sizes if s <= max_num_batched_tokens)


def capture_sizes_v010(max_num_seqs: int, max_num_batched_tokens: int) -> tuple[int, ...]:
    """v0.10.0-v0.10.2: 1, 2, 4, then every 8 up to cuda_graph_sizes = [min(2 x max_num_seqs, 512)], none above
    max_num_batched_tokens (vllm/config.py SchedulerConfig.__post_init__ v0.10.0 line 2456, vllm/config/scheduler.py
    line 244 at v0.10.2; VllmConfig._set_cudagraph_sizes, ``range(8, cuda_graph_sizes[0] + 1, 8)``)."""
    largest = min(2 * max_num_seqs, 512)
    sizes = [1, 2, 4, *range(8, largest + 1, 8)]
    return tuple(s for s in sizes if s <= max_num_batched_tokens)


V1_RULES: dict[str, V1Rules] = {
    "0.11": V1Rules(release="0.11.0", context_in_budget=False, comms_in_budget=False, free_memory_check=True,
                    sampler_holds_all_tokens=True, a100_exception=True, capture_sizes=capture_sizes_v011,
                    hybrid_groups=True, concurrency_by_tokens=False),
    "0.8": V1Rules(release="0.8.5", context_in_budget=True, comms_in_budget=True, free_memory_check=False,
                   sampler_holds_all_tokens=False, a100_exception=False, capture_sizes=capture_sizes_v085,
                   hybrid_groups=False, concurrency_by_tokens=True, ep_group=False, symm_mem=False,
                   runner_buffers_in_budget=True),
    # v0.9.2 and v0.10.x: the 0.11.0 rules but for the snapshot's place (the module docstring); the rest read at their
    # tags: the free-memory check (gpu_worker.py v0.9.2 line 143), profile_run keeping every token's hidden state
    # beside the sampler warm-up (gpu_model_runner.py v0.9.2 line 2274, v0.10.2 line 3031), the A100 exception
    # (engine/arg_utils.py v0.9.2 line 1629), the hybrid KV cache manager (kv_cache_utils.py v0.9.2
    # unify_hybrid_kv_cache_specs beside disable_hybrid_kv_cache_manager), concurrency by blocks
    # (get_max_concurrency_for_kv_cache_config). v0.9.2's capture sizes are v0.8.5's rule: cuda_graph_sizes
    # defaults to [512] (vllm/config.py line 2133, _set_cudagraph_sizes lines 4727-4745).
    "0.9": V1Rules(release="0.9.2", context_in_budget=False, comms_in_budget=True, free_memory_check=True,
                   sampler_holds_all_tokens=True, a100_exception=True, capture_sizes=capture_sizes_v085,
                   hybrid_groups=True, concurrency_by_tokens=False, symm_mem=False, ep_pynccl=False),
    "0.10": V1Rules(release="0.10.2", context_in_budget=False, comms_in_budget=True, free_memory_check=True,
                    sampler_holds_all_tokens=True, a100_exception=True, capture_sizes=capture_sizes_v010,
                    hybrid_groups=True, concurrency_by_tokens=False, symm_mem=False, ep_pynccl=False),
}
