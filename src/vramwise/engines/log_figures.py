"""An engine plan's numbers under the figure names its startup log prints (engines/logs/parsed.py FIGURE_NAMES).

``verify --log`` and ``bench/engines.py`` set each logged figure beside the number of this mapping with the same
name; a name missing here is "not modelled". Each entry says which part of the plan it reads, so that a figure is
compared with the quantity the engine means by it, never a look-alike.
"""

from __future__ import annotations

from vramwise.engines.result import EngineEstimate


def plan_figures(plan: EngineEstimate, *, gpu_bytes: int, block: int) -> dict[str, int | float]:
    """The plan's figures by name for the plan's engine (vLLM, SGLang); ``block``: the KV block in tokens."""
    if plan.engine == "vllm":
        return _vllm(plan, gpu_bytes=gpu_bytes, block=block)
    if plan.engine == "sglang":
        return _sglang(plan, gpu_bytes=gpu_bytes)
    if plan.engine == "llama.cpp":
        return _llamacpp(plan)
    return {}


def _vllm(plan: EngineEstimate, *, gpu_bytes: int, block: int) -> dict[str, int | float]:
    from vramwise.engines.vllm import vllm_figures

    f = vllm_figures(plan)
    weights, peak, non_torch = int(f["weights"]), int(f["activation_peak"]), int(f["non_torch"])
    out: dict[str, int | float] = {
        "weights": weights,
        "activation_peak": peak,
        "non_torch": non_torch,
        # memory_profiling's non_kv_cache_memory = weights + torch peak increase + non-torch increase
        "non_kv": weights + peak + non_torch,
        "consumed": weights + non_torch,  # compile_or_warm_up_model: "consumed memory (weights + non-torch)"
        "torch_peak": weights + peak,  # 0.6.2-0.6.4: torch.cuda.max_memory_allocated over the profile, weights in
        "kv_cache": int(f["available_kv_cache"]),
        "kv_tokens": int(f["kv_tokens"]),
        "kv_blocks": int(f["kv_tokens"]) // block,
        # V0 logs its concurrency before raise_if_cache_size_invalid refuses (executor initialize_cache, then the
        # worker's check): the ratio stands even where the plan refuses
        "max_concurrency": (float(f["concurrency"]) if not plan.version.startswith("0.6") or not plan.context_len
                            else int(f["kv_tokens"]) / plan.context_len),
        "cuda_graphs": int(f["cuda_graphs"]),
        "gpu_total": gpu_bytes,
    }
    if plan.version == "0.6.4":  # v0.6.4's report: used before the profile (context + weights) and after it
        out["initial_usage"] = weights + sum(t.bytes for t in plan.estimate.persistent
                                             if t.name == "overhead/cuda_context")
        out["post_profile_usage"] = weights + non_torch
    if plan.budget is not None:
        out["budget"] = plan.budget
    if plan.refusal is not None and plan.max_context is not None:
        out["max_model_len_fits"] = plan.max_context
    return out


def _sglang(plan: EngineEstimate, *, gpu_bytes: int) -> dict[str, int | float]:
    terms = {t.name: t.bytes for t in plan.estimate.persistent}
    pool = plan.kv_pool.bytes if plan.kv_pool is not None else 0
    return {
        "weights": sum(b for n, b in terms.items() if n.startswith("weights/")),
        "kv_cache": pool,
        # SGLang's MHATokenToKVPool allocates k_buffer and v_buffer of equal size (memory_pool.py _create_buffers)
        "kv_cache_k": pool // 2,
        "kv_cache_v": pool // 2,
        "kv_tokens": plan.kv_tokens or 0,
        "gpu_total": gpu_bytes,
        # "Init torch distributed ends. mem usage": free memory before (the CUDA context already made, model_runner.py
        # init_torch_distributed) less after: the buffers engines/sglang_comms.py counts
        "distributed_init": sum(b for n, b in terms.items() if n in ("overhead/nccl", "overhead/custom_all_reduce")),
    }


def _llamacpp(plan: EngineEstimate) -> dict[str, int | float]:
    """llama.cpp logs per device buffer: the plan's fullest GPU (with -sm layer the first, CUDA0, which the split
    gives the most layers; the first rank a log names) for the model, KV and compute buffers, and the KV cache over
    every device (llama_kv_cache's "KV self size" line), split into K and V in the first GPU's proportion (the same
    cache types on every device)."""
    first = plan.per_gpu[0] if plan.per_gpu else plan.estimate
    compute = max((first.phase_total(p) - first.persistent_bytes for p in first.phases), default=0)
    k1, v1 = first.bytes_of("kv_cache/k"), first.bytes_of("kv_cache/v")
    total = plan.kv_pool.bytes if plan.kv_pool is not None else k1 + v1
    k = total * k1 // (k1 + v1) if k1 + v1 else 0
    v = total - k
    return {
        "weights": first.bytes_of("weights"),
        "kv_cache": first.bytes_of("kv_cache"),
        "kv_cache_total": total,
        "kv_cache_k": k,
        "kv_cache_v": v,
        "compute_buffer": compute,
    }
