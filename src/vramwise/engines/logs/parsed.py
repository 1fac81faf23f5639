"""What a startup log says, engine-neutral: the figures it printed, each in bytes (or a count) with its precision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

# Units as the engines print them, in bytes. vLLM's and SGLang's "GB" is 2^30 bytes, not 10^9: vLLM V0 divides by
# float(2**30) before printing "GB" (vllm/worker/model_runner.py, GPUModelRunnerBase.load_model, "Loading model
# weights took %.4f GB"), SGLang divides by 1 << 30 in get_available_gpu_memory (python/sglang/srt/utils.py) and by
# GB = 1024 * 1024 * 1024 for the KV pool (python/sglang/srt/mem_cache/memory_pool.py). llama.cpp prints MiB as
# bytes / 1024.0 / 1024.0 (src/llama-model.cpp load_tensors, src/llama-kv-cache.cpp, src/llama-context.cpp).
GIB = 2**30
MIB = 2**20
BINARY_GB = 2**30


# Every figure name a parser may emit, with what it is: one vocabulary across engines, so a comparison can put
# "weights" or "kv_cache" of any engine beside the estimate's term of the same meaning.
FIGURE_NAMES: Mapping[str, str] = MappingProxyType({
    "weights": "memory the model's weights took on this rank or device buffer",
    "activation_peak": "vLLM: the profile run's PyTorch activation peak (torch peak increase)",
    "non_torch": "vLLM: memory outside PyTorch's allocator (CUDA context, NCCL, custom all-reduce buffers)",
    "non_kv": "vLLM: everything but the KV cache (weights + activation peak + non-torch)",
    "consumed": "vLLM: weights + non-torch, as the usage report sums them",
    "torch_peak": "vLLM 0.6.2-0.6.4: PyTorch's peak during profiling, weights included",
    "initial_usage": "vLLM 0.6.2-0.6.4: GPU memory in use before profiling",
    "post_profile_usage": "vLLM 0.6.2-0.6.4: GPU memory in use after profiling",
    "cuda_graphs": "memory the CUDA graph capture took",
    "cuda_graphs_estimated": "vLLM: its own estimate of the CUDA graph pool before capturing",
    "kv_cache": "the KV cache: vLLM's budget for it, SGLang's K + V pool, llama.cpp's KV buffer per device",
    "kv_cache_k": "the K half of the KV cache (SGLang per rank, llama.cpp over all devices)",
    "kv_cache_v": "the V half of the KV cache",
    "kv_cache_total": "llama.cpp: the KV cache over all devices",
    "kv_needed": "vLLM: KV memory one max_model_len request needs, when it does not fit",
    "kv_tokens": "tokens the KV cache holds (vLLM GPU KV cache size, SGLang #tokens / max_total_num_tokens)",
    "kv_blocks": "vLLM: KV cache blocks on the GPU (tokens = blocks x block_size)",
    "cpu_kv_blocks": "vLLM V0: swap blocks in host memory",
    "max_concurrency": "vLLM: requests of max_model_len tokens the KV cache holds at once (a ratio)",
    "max_model_len_fits": "vLLM: the largest max_model_len the KV memory allows, when the asked one does not fit",
    "gpu_total": "the GPU's total memory as CUDA reports it",
    "gpu_free": "free GPU memory when the engine started (llama.cpp: per device)",
    "budget": "vLLM: gpu_memory_utilization x the CUDA total",
    "distributed_init": "SGLang: memory torch.distributed's init took (CUDA context, NCCL, custom all-reduce)",
    "avail_before_load": "SGLang: free memory before loading the weights",
    "avail_after_load": "SGLang: free memory after loading the weights",
    "avail_after_pool": "SGLang: free memory after allocating the KV pool",
    "avail_before_graphs": "SGLang: free memory before capturing CUDA graphs",
    "avail_after_graphs": "SGLang: free memory after capturing CUDA graphs",
    "avail_after_startup": "SGLang: free memory the scheduler reports once started",
    "compute_buffer": "llama.cpp: the compute (graph scratch) buffer per backend",
    "output_buffer": "llama.cpp: the logits / embeddings output buffer",
    "recurrent_state": "llama.cpp: the recurrent state buffer of Mamba-like layers",
    "scratch_buffer": "llama.cpp 2023: the VRAM scratch buffer",
    "context": "llama.cpp 2023: the context's VRAM (KV + scratch)",
    "vram_total": "llama.cpp 2023: the total VRAM it used",
    "file_size": "llama.cpp: the GGUF file's size",
    "failed_allocation": "llama.cpp: the exact size of a buffer that failed to allocate",
    "offloaded_layers": "llama.cpp: layers offloaded to the GPU (-ngl)",
})


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One number a log printed, converted to bytes (memory) or kept as a count (tokens, blocks, layers, ratio).

    ``value`` is exact arithmetic on the printed digits (``Decimal(printed) * unit bytes``, rounded to a whole
    byte); ``tolerance`` is how far the true value may be from it given how it was printed: half a unit of the
    last printed digit for a rounded number (``%.2f`` GiB: 0.005 GiB = 5,368,709 bytes), a whole unit for a
    truncated one (llama.cpp's ``%zu MiB free``), 0 for an exact count."""

    name: str  # engine-neutral, one of FIGURE_NAMES: "weights", "activation_peak", "kv_cache", "kv_tokens"...
    value: int | float  # bytes (int) for a memory figure; a count, or a ratio such as max_concurrency (float)
    unit: str  # as printed: "GiB", "GB" and "MB" (2^30 and 2^20 in every engine here), "MiB", "B", "tokens", "x"...
    printed: str  # the number exactly as the log printed it, e.g. "14.25"
    tolerance: int | float  # in the same units as value (bytes for a memory figure)
    rank: str = ""  # the worker or device it is for, as logged ("rank=1", "TP1", "CUDA0"); "" for the one process
    line: int = 0  # 1-based line of the log it came from

    @property
    def is_bytes(self) -> bool:
        """Whether ``value`` is a number of bytes (a memory figure) rather than a count or ratio."""
        return self.unit in _UNIT_BYTES


# "MB" is llama.cpp's 2023 spelling of bytes / 1024.0 / 1024.0 (see llamacpp.py); "B" an exact byte count.
_UNIT_BYTES: dict[str, int] = {"GiB": GIB, "GB": BINARY_GB, "MiB": MIB, "MB": MIB, "B": 1}


def memory(
    name: str,
    printed: str,
    unit: str,
    *,
    rank: str = "",
    line: int = 0,
    truncated: bool = False,
    decimals: int | None = None,
) -> Figure:
    """A memory figure from its printed digits: bytes and the tolerance the printing leaves (see ``Figure``).

    ``decimals``: the precision the engine rounded to when Python may print fewer digits (vLLM's ``round(x, 2)``
    prints 14.0 for 14.00); ``truncated``: the engine cut the number down (C's integer division) instead of
    rounding it, so the true value lies up to one unit above it."""
    size = _UNIT_BYTES[unit]
    digits = Decimal(printed.replace(",", ""))
    exponent = digits.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) else 0
    if decimals is not None:
        places = max(places, decimals)
    step = Decimal(1).scaleb(-places)  # one unit of the last digit the engine kept
    tolerance = step * size if truncated else step * size / 2
    return Figure(
        name=name,
        value=int((digits * size).to_integral_value()),
        unit=unit,
        printed=printed,
        tolerance=int(tolerance.to_integral_value(rounding="ROUND_CEILING")),
        rank=rank,
        line=line,
    )


def count(name: str, printed: str, unit: str, *, rank: str = "", line: int = 0) -> Figure:
    """An exact count as printed (thousands separators allowed): tokens, blocks, layers."""
    return Figure(name=name, value=int(printed.replace(",", "")), unit=unit, printed=printed, tolerance=0, rank=rank,
                  line=line)


def ratio(name: str, printed: str, *, rank: str = "", line: int = 0) -> Figure:
    """A ratio printed with ``%.2f`` (vLLM's maximum concurrency ``2.23x``): tolerance half the last digit."""
    digits = Decimal(printed)
    exponent = digits.as_tuple().exponent
    half = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0) / 2
    return Figure(name=name, value=float(digits), unit="x", printed=printed, tolerance=float(half), rank=rank,
                  line=line)


@dataclass(frozen=True, kw_only=True)
class ParsedLog:
    """A serving engine's startup log, as it printed it: who, what, with which flags, and every memory figure.

    Nothing here is estimated or corrected: the figures are the log's own numbers in bytes, kept per rank (vLLM
    and SGLang workers) or per device buffer (llama.cpp), so a comparison can pick the rank it models."""

    engine: str  # "vllm", "sglang", "llama.cpp"
    version: str | None  # as logged ("0.9.1"; llama.cpp "4524 (6171c9d2)"); None when the log does not say
    model: str | None  # the model id or path as logged
    flags: Mapping[str, str] = field(default_factory=_empty)  # engine args / config as logged, values as text
    figures: tuple[Figure, ...] = ()
    extras: Mapping[str, str] = field(default_factory=_empty)  # engine-specific facts (GPU names, GGUF metadata...)

    @property
    def ranks(self) -> tuple[str, ...]:
        """The ranks or devices the figures name, in the order they first appear."""
        return tuple(dict.fromkeys(f.rank for f in self.figures))

    def named(self, name: str, rank: str | None = None) -> tuple[Figure, ...]:
        """Every figure called ``name`` (for one ``rank`` when given), in log order."""
        return tuple(f for f in self.figures if f.name == name and (rank is None or f.rank == rank))

    def best(self, name: str, rank: str | None = None) -> Figure | None:
        """The most precise figure called ``name`` (the smallest tolerance; the first on a tie), or None.

        vLLM prints the weights twice ("Model loading took 14.9934 GiB", then "model weights take 14.99GiB"):
        the four-decimal one wins."""
        found = self.named(name, rank)
        return min(found, key=lambda f: f.tolerance) if found else None
