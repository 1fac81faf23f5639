"""What an engine's memory plan says: the one result every output about a serving run reads."""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.estimate.term import Estimate, Term


@dataclass(frozen=True, kw_only=True)
class EngineEstimate:
    """One engine's plan for one GPU (one tensor-parallel rank): terms, budget and what fits.

    ``estimate`` holds the per-GPU terms and phases as the engine allocates them (weights, the profile run's
    activation peak, non-torch memory, CUDA graphs, the KV pool); ``budget`` is the memory the engine lets
    itself use (vLLM: ``gpu_memory_utilization`` x the CUDA total); the capacity fields are None where the
    engine has no such notion (transformers ``generate`` has no pool)."""

    engine: str  # "vllm", "sglang", "llama.cpp", "hf"
    version: str  # the release whose source the plan follows, e.g. "0.11.0"
    estimate: Estimate
    budget: int | None = None  # bytes the engine gives itself on this GPU
    kv_pool: Term | None = None  # the KV cache pool the engine allocates from what is left
    kv_tokens: int | None = None  # tokens of KV the pool holds (vLLM logs "GPU KV cache size: N tokens")
    max_sequences: int | None = None  # concurrent sequences of the requested length
    max_context: int | None = None  # the largest context (max_model_len) one sequence can have
    host_bytes: int = 0  # host RAM the engine uses for this model (llama.cpp -ngl offload, mmap)
    notes: tuple[str, ...] = ()
    # why the engine would refuse to start, in a few words (vLLM: "KV pool negative", "max_model_len larger than
    # the KV cache"); None when it starts. The verdict reads it: DOES NOT FIT never sits beside a capacity.
    refusal: str | None = None
    refusal_message: str | None = None  # the engine's own error text for it, as its source words it
    kv_bytes_per_token: int = 0  # all layers, one token (the pool's unit)
    context_len: int | None = None  # the context the engine is set up for (vLLM max_model_len, llama.cpp n_ctx)
    concurrency: float | None = None  # sequences of context_len the pool holds (vLLM: "Maximum concurrency")
    sequence_tokens: int = 0  # tokens per sequence that max_sequences counts (s + n)
    # every GPU's own estimate where the GPUs differ (hf device_map: whole layers per GPU); ``estimate`` is then
    # the one that peaks highest, which decides the verdict. Empty where every GPU holds the same (tp ranks).
    per_gpu: tuple[Estimate, ...] = ()
